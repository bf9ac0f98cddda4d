"""Floating-point work of a training step, and the machine's peak, for "fraction of peak" figures.

The work is counted by TensorFlow's graph profiler on the real forward and backward pass of one
history at a fixed width (every matrix product and einsum; the elementwise ops are a small share
and are left out). It is counted at a grid of widths and interpolated, and each training row
counts at its own length: padding that the step never computes is not counted as work done.

The peak is cores x clock x FLOPs per cycle, with FLOPs per cycle from the CPU's flags: two fused
multiply-add units per core, each as wide as the widest vector the core executes natively.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from pathlib import Path

import numpy as np
import psutil


@dataclasses.dataclass(frozen=True)
class Peak:
    gflops: float
    how: str  # the sum behind the figure, printed beside it


def peak_fp32(cpuinfo: str | Path = "/proc/cpuinfo") -> Peak:
    """The machine's float32 peak from its flags and clock (base clock where no boost is exposed)."""
    text = Path(cpuinfo).read_text() if Path(cpuinfo).exists() else ""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = set(fields.get("flags", "").split())
    amd_zen4 = fields.get("vendor_id") == "AuthenticAMD" and fields.get("cpu family") == "25"
    if "avx512f" in flags and not amd_zen4:
        lanes, unit = 16, "AVX-512"
    elif "avx512f" in flags:
        lanes, unit = 8, "AVX-512 on a 256-bit datapath (AMD family 25)"
    elif {"avx2", "fma"} <= flags:
        lanes, unit = 8, "AVX2 + FMA"
    else:
        lanes, unit = 4, "SSE"
    ghz = _max_clock_ghz() or float(fields.get("cpu MHz", "0") or 0) / 1000
    cores = psutil.cpu_count(logical=False) or os.cpu_count() or 1
    per_cycle = 2 * 2 * lanes  # 2 FMA units x (multiply + add) x lanes
    gflops = cores * ghz * per_cycle
    how = f"{cores} cores x {ghz:.2f} GHz x {per_cycle} float32 FLOP/cycle ({unit}, 2 FMA units)"
    return Peak(gflops, how)


def _max_clock_ghz() -> float | None:
    path = Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
    try:
        return int(path.read_text()) / 1e6
    except (OSError, ValueError):
        return None


def _register_einsum() -> None:
    """Einsum has no FLOP count in TensorFlow's registry; the memory encoder's slots use it."""
    from tensorflow.python.framework import graph_util, ops
    from tensorflow.python.profiler.internal import flops_registry  # noqa: F401 (registers the rest)

    try:

        @ops.RegisterStatistics("Einsum", "flops")
        def _einsum_flops(graph, node):  # 2 x the product of every index's size
            equation = node.attr["equation"].s.decode()
            operands = equation.split("->")[0].split(",")
            sizes: dict[str, int] = {}
            for term, name in zip(operands, node.input):
                shape = graph_util.tensor_shape_from_node_def_name(graph, name)
                shape.assert_is_fully_defined()
                for letter, dim in zip(term.replace("...", ""), shape.as_list()[-len(term.replace("...", "")) :]):
                    sizes[letter] = dim
            return ops.OpStats("flops", 2 * int(np.prod(list(sizes.values()))))

    except KeyError:  # registered already in this process
        pass


def step_flops(cfg, spec, points: int = 33) -> tuple[np.ndarray, np.ndarray]:
    """(widths, FLOPs): a training row's work (forward and backward) at ``points`` widths from 1 to
    max_len, counted on the same loss the training loop minimises. Attention makes it grow with
    the square of the length; a grid serves the encoders whose cost is not a plain polynomial."""
    import tensorflow as tf

    from interest.models.encoders import build_encoder, encoder_args
    from interest.models.objective import NextItemTask
    from interest.schema import SEQUENCE_FEATURES

    _register_einsum()
    encoder = build_encoder(cfg.model.encoder, precision="float32", **encoder_args(cfg.model, spec))
    counts = np.ones(spec.vocab_size)
    # dense: every position's loss at static shapes, which is what a row with no padding computes
    task = dataclasses.replace(NextItemTask.for_run(cfg.train, counts, spec.vocab_size), dense=True)
    seed = tf.constant([1, 2], tf.int64)

    from interest.training.loop import training_loss

    @tf.function
    def loss_and_grads(inputs, targets):  # the training loop's own loss
        with tf.GradientTape() as tape:
            loss, _ = training_loss(encoder, task, inputs, targets, seed)
        return tape.gradient(loss, encoder.trainable_variables)

    widths = np.unique(np.linspace(1, spec.max_len, points).round().astype(int))
    totals = []
    for width in widths:
        sig = {f: tf.TensorSpec([1, int(width)], tf.int32) for f in SEQUENCE_FEATURES}  # [1, l]
        with warnings.catch_warnings():  # Keras warns of a softmax over one step at width 1
            warnings.simplefilter("ignore", UserWarning)
            graph = loss_and_grads.get_concrete_function(sig, tf.TensorSpec([1, int(width)], tf.int32)).graph
        options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
        options["output"] = "none"
        totals.append(tf.compat.v1.profiler.profile(graph=graph, options=options).total_float_ops)
    return widths, np.array(totals, float)


def row_lengths(path: str) -> np.ndarray:
    """The real input length of every training row (the steps a training step computes)."""
    import pyarrow.parquet as pq

    from interest.schema import SHIFT

    lengths = []
    for f in sorted(Path(path).rglob("*.parquet")):
        column = pq.read_table(f, columns=["item_idx"]).column("item_idx").combine_chunks()
        items = np.asarray(column.flatten()).reshape(len(column), -1)  # [n, L]
        lengths.append(np.maximum((items[:, : items.shape[1] - SHIFT["train"]] > 0).sum(1), 1))
    return np.concatenate(lengths)


def flops_per_row(grid: tuple[np.ndarray, np.ndarray], lengths: np.ndarray) -> float:
    """Mean FLOPs of a training row over the rows' own lengths (``grid`` from :func:`step_flops`)."""
    return float(np.interp(lengths, *grid).mean())
