"""``train.precision: auto``: bfloat16 only where the hardware computes it, said in the run log."""

from __future__ import annotations

import pytest

from interest.config import load_config
from interest.models.precision import cpu_flags, native_bfloat16, resolve_precision

AVX2_ONLY = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx avx2 fma\n"
BF16 = "processor\t: 0\nmodel name\t: Intel Xeon\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_tile\n"


@pytest.mark.parametrize(("cpuinfo", "native"), [(AVX2_ONLY, None), (BF16, "CPU flag avx512_bf16")])
def test_native_bfloat16_is_read_from_the_cpu_flags(tmp_path, cpuinfo, native):
    path = tmp_path / "cpuinfo"
    path.write_text(cpuinfo)
    assert native_bfloat16(cpu_flags(path)) == native
    assert native_bfloat16({"avx2", "amx_bf16"}) == "CPU flag amx_bf16"
    assert native_bfloat16(set(), gpu="GPU H200 (compute capability 9.0)") == "GPU H200 (compute capability 9.0)"


def test_an_unreadable_cpuinfo_means_no_flags(tmp_path):
    assert cpu_flags(tmp_path / "absent") == set()
    assert native_bfloat16(cpu_flags(tmp_path / "absent")) is None


def test_auto_picks_bfloat16_only_with_native_support_and_says_why():
    policy, why = resolve_precision("auto", "CPU flag avx512_bf16")
    assert (policy, why) == ("mixed_bfloat16", "precision auto: mixed_bfloat16 (native bfloat16: CPU flag avx512_bf16)")
    policy, why = resolve_precision("auto", None)
    assert policy == "float32" and why.startswith("precision auto: float32 (no native bfloat16 here")


def test_an_explicit_choice_is_kept_and_emulated_bfloat16_names_its_cost():
    assert resolve_precision("float32", "CPU flag avx512_bf16") == ("float32", "precision float32 as configured")
    assert resolve_precision("mixed_bfloat16", "CPU flag amx_bf16")[0] == "mixed_bfloat16"
    policy, why = resolve_precision("mixed_bfloat16", None)
    assert policy == "mixed_bfloat16" and "emulates it, about 6x slower per step than float32" in why


def test_auto_is_the_default_and_a_wrong_precision_is_refused():
    assert load_config(None, []).train.precision == "auto"
    with pytest.raises(ValueError, match="not 'bfloat16'"):
        resolve_precision("bfloat16", None)
    with pytest.raises(Exception, match="precision"):
        load_config("conf/local.yaml", ["train.precision=bfloat16"])
