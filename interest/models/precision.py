"""Which compute precision to train in: bfloat16 only where the hardware computes it natively.

Without native bfloat16 (an AVX2-only CPU, common in cloud fleets and laptops) TensorFlow
emulates it: on a 2-core AVX2-only AMD EPYC a ``mixed_bfloat16`` epoch of ``conf/ml100k.yaml`` took
22 s, about 6x a float32 one. Native bfloat16 (AVX512_BF16 or AMX on the CPU, a GPU of compute
capability 8.0 or later) is no sure gain for models as small as ours: 4-10 % faster per epoch on
an AVX-512 BF16 EPYC, but 6-22 % slower on an AMX Xeon (BENCHMARKS.md, "Batches by length").
``auto`` (the default) uses it only where the hardware computes it natively, so no profile is
tuned to one CPU and none falls into emulation; a profile that must be fast on one machine pins
what that machine measured (``conf/ml100k.yaml`` pins float32).
"""

from __future__ import annotations

from pathlib import Path

PRECISIONS = ("auto", "float32", "mixed_bfloat16")
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo spellings
SHOWN_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")  # what benchmarks print


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> set[str]:
    """The CPU's feature flags (Linux); empty where the file cannot be read."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def gpu_bfloat16() -> str | None:
    """The first GPU that computes bfloat16 natively (compute capability 8.0+), named, or None."""
    import tensorflow as tf

    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        capability = details.get("compute_capability")
        if capability and tuple(capability) >= (8, 0):
            return f"GPU {details.get('device_name', gpu.name)} (compute capability {capability[0]}.{capability[1]})"
    return None


def native_bfloat16(flags: set[str] | None = None, gpu: str | None = None) -> str | None:
    """Why this machine computes bfloat16 natively (the GPU or the CPU flag), or None."""
    if gpu:
        return gpu
    flags = cpu_flags() if flags is None else flags
    found = [f for f in BF16_CPU_FLAGS if f in flags]
    return f"CPU flag {found[0]}" if found else None


def resolve_precision(requested: str, native: str | None) -> tuple[str, str]:
    """The Keras dtype policy to train with, and a line for the run log that says why.

    ``native`` is what :func:`native_bfloat16` found (None: nothing).
    """
    if requested not in PRECISIONS:
        raise ValueError(f"train.precision must be one of {', '.join(PRECISIONS)}, not {requested!r}")
    if requested == "auto":
        if native:
            return "mixed_bfloat16", f"precision auto: mixed_bfloat16 (native bfloat16: {native})"
        return "float32", (
            "precision auto: float32 (no native bfloat16 here: no avx512_bf16 or amx_bf16 CPU flag, "
            "no GPU of compute capability 8.0+)"
        )
    if requested == "mixed_bfloat16" and not native:
        return requested, (
            "precision mixed_bfloat16 as configured, but this machine has no native bfloat16: TensorFlow "
            "emulates it, about 6x slower per step than float32 (set train.precision: auto or float32)"
        )
    return requested, f"precision {requested} as configured"
