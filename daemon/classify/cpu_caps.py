"""Whether this CPU computes bf16 natively, read from the flags in /proc/cpuinfo."""

from __future__ import annotations

from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
# Either one makes bf16 matmuls fast in oneDNN; without them torch emulates bf16 in fp32
# and converts on every op.
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
# Measured on a Zen 3 (AVX2 only), ViT-B/32 tower, batch 16, 2 threads: bf16 1.7 images/s
# against 10.8 in fp32 (issue 13).
BF16_SLOWDOWN_NOTE = "about 6x slower than fp32 (measured on an AVX2-only Zen 3: 1.7 vs 10.8 img/s)"


def cpu_flags(cpuinfo_text: str) -> frozenset[str]:
    """The flags of the first processor listed ('flags' on x86, 'Features' on ARM)."""
    for line in cpuinfo_text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("flags", "features"):
            return frozenset(value.lower().split())
    return frozenset()


def has_native_bf16(cpuinfo_text: str) -> bool:
    return not NATIVE_BF16_FLAGS.isdisjoint(cpu_flags(cpuinfo_text))


def this_cpu_has_native_bf16() -> bool:
    """This machine's answer; an unreadable cpuinfo counts as no native bf16 (fp32 is safe)."""
    try:
        text = CPUINFO.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return has_native_bf16(text)


def slow_bf16_warning(precision: str, device_type: str, *, native_bf16: bool) -> str | None:
    """The warning for an explicit bf16 on a CPU that lacks it; None where nothing is wrong."""
    if precision != "bf16" or device_type != "cpu" or native_bf16:
        return None
    flags = " or ".join(sorted(flag.upper() for flag in NATIVE_BF16_FLAGS))
    return (
        f"model.precision bf16 on a CPU without native bf16 ({flags}): {BF16_SLOWDOWN_NOTE}; "
        "use precision auto or fp32"
    )


def configured_bf16_warning(precision: str, device: str) -> str | None:
    """slow_bf16_warning for a config's settings, as check-config sees them before any load."""
    if precision != "bf16" or device.startswith("cuda"):
        return None
    device_type = "cpu"
    if device == "auto":
        import torch  # only here: seconds to import, and only 'auto' needs to ask for a GPU

        device_type = "cuda" if torch.cuda.is_available() else "cpu"
    return slow_bf16_warning(precision, device_type, native_bf16=this_cpu_has_native_bf16())
