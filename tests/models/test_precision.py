"""``auto`` precision follows the hardware: bf16 only where the CPU computes it natively."""

from __future__ import annotations

from pathlib import Path

import pytest

from models import Precision, cpu_has_native_bf16, resolve_precision
from models.precision import cpuinfo_has_bf16

AVX2_ONLY = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse sse2 avx avx2 fma\n"
SAPPHIRE_RAPIDS = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
NEOVERSE_V2 = "processor\t: 0\nFeatures\t: fp asimd sve sve2 bf16 i8mm\n"


@pytest.mark.parametrize(("text", "native"), [(AVX2_ONLY, False), (SAPPHIRE_RAPIDS, True), (NEOVERSE_V2, True)])
def test_cpuinfo_flags(tmp_path: Path, text: str, native: bool) -> None:
    (tmp_path / "cpuinfo").write_text(text)
    assert cpuinfo_has_bf16(tmp_path / "cpuinfo") is native


def test_no_cpuinfo_means_not_native(tmp_path: Path) -> None:
    assert cpuinfo_has_bf16(tmp_path / "absent") is False


def test_auto_on_this_cpu_is_bf16_exactly_where_it_is_native() -> None:
    expected = Precision.BF16 if cpu_has_native_bf16() else Precision.FP32
    assert resolve_precision("auto", "cpu") is expected


@pytest.mark.parametrize("explicit", ["fp32", "bf16"])
def test_an_explicit_precision_is_kept(explicit: str) -> None:
    assert resolve_precision(explicit, "cpu") is Precision(explicit)
