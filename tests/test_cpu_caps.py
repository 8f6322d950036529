"""The bf16 capability probe, precision auto, and the slow-bf16 warnings."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from daemon.classify import cpu_caps
from daemon.classify.classifier import ClipClassifier
from daemon.classify.cpu_caps import (
    configured_bf16_warning,
    cpu_flags,
    has_native_bf16,
    slow_bf16_warning,
    this_cpu_has_native_bf16,
)
from daemon.classify.precision import choose_precision

CPU = torch.device("cpu")

# Trimmed /proc/cpuinfo of the two CPUs the issue measured on.
ZEN3_AVX2 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13
flags\t\t: fpu vme sse sse2 ssse3 sse4_1 sse4_2 avx avx2 fma bmi2 sha_ni
bogomips\t: 4900.00

processor\t: 1
flags\t\t: fpu vme sse sse2 ssse3 sse4_1 sse4_2 avx avx2 fma bmi2 sha_ni
"""
SAPPHIRE_RAPIDS = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8481C
flags\t\t: fpu sse2 avx avx2 avx512f avx512bw avx512_vnni avx512_bf16 amx_bf16 amx_tile
"""
COOPER_LAKE_AVX512_BF16_ONLY = "flags : avx2 avx512f AVX512_BF16\n"


@pytest.fixture
def fake_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the probe at a cpuinfo file the test writes: the real CPU cannot be swapped."""
    path = tmp_path / "cpuinfo"
    monkeypatch.setattr(cpu_caps, "CPUINFO", path)
    return path


def test_flags_come_from_the_first_processor() -> None:
    assert "avx2" in cpu_flags(ZEN3_AVX2)
    assert cpu_flags("model name : nothing here\n") == frozenset()


@pytest.mark.parametrize(
    ("cpuinfo", "native"),
    [(ZEN3_AVX2, False), (SAPPHIRE_RAPIDS, True), (COOPER_LAKE_AVX512_BF16_ONLY, True)],
)
def test_native_bf16_needs_avx512_bf16_or_amx(cpuinfo: str, native: bool) -> None:
    assert has_native_bf16(cpuinfo) is native


def test_auto_follows_the_faked_cpu_flags(fake_cpu: Path) -> None:
    fake_cpu.write_text(ZEN3_AVX2)
    assert choose_precision("auto", CPU) == "fp32"
    fake_cpu.write_text(SAPPHIRE_RAPIDS)
    assert choose_precision("auto", CPU) == "bf16"


def test_unreadable_cpuinfo_means_fp32(fake_cpu: Path) -> None:
    assert not fake_cpu.exists()
    assert choose_precision("auto", CPU) == "fp32"


def test_auto_reads_this_cpu_through_the_daemons_function() -> None:
    native = has_native_bf16(Path("/proc/cpuinfo").read_text())
    assert this_cpu_has_native_bf16() is native
    assert choose_precision("auto", CPU) == ("bf16" if native else "fp32")


def test_auto_on_a_gpu_is_bf16_and_explicit_settings_pass_through() -> None:
    assert choose_precision("auto", torch.device("cuda"), native_bf16=False) == "bf16"
    assert choose_precision("int8", CPU, native_bf16=True) == "int8"
    assert choose_precision("bf16", CPU, native_bf16=False) == "bf16"
    with pytest.raises(ValueError, match="auto, fp32, bf16, int8"):
        choose_precision("fp16", CPU)


def test_the_warning_names_the_slowdown_only_where_bf16_is_emulated() -> None:
    warning = slow_bf16_warning("bf16", "cpu", native_bf16=False)
    assert warning is not None and "6x slower than fp32" in warning
    assert slow_bf16_warning("bf16", "cpu", native_bf16=True) is None
    assert slow_bf16_warning("bf16", "cuda", native_bf16=False) is None
    assert slow_bf16_warning("fp32", "cpu", native_bf16=False) is None


def test_configured_warning_skips_gpus_and_reads_the_cpu(fake_cpu: Path) -> None:
    fake_cpu.write_text(ZEN3_AVX2)
    assert configured_bf16_warning("bf16", "cuda:0") is None
    assert configured_bf16_warning("auto", "cpu") is None
    assert configured_bf16_warning("bf16", "cpu") is not None


def test_start_up_warns_about_explicit_bf16_and_records_the_precision_used(
    fake_cpu: Path,
    tiny_model_dir: Path,
    default_labels: list[str],
    default_targets: list[bool],
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake_cpu.write_text(ZEN3_AVX2)
    auto = ClipClassifier.load(
        str(tiny_model_dir), default_labels, default_targets, precision="auto"
    )
    assert auto.precision == "fp32"
    assert "6x slower" not in caplog.text
    explicit = ClipClassifier.load(
        str(tiny_model_dir), default_labels, default_targets, precision="bf16"
    )
    assert explicit.precision == "bf16"
    assert "without native bf16" in caplog.text and "6x slower" in caplog.text
