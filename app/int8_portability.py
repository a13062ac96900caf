"""Tell an operator when an int8 model will answer worse on this CPU than it was measured.

int8 files that `python -m training quantize` wrote before it used 7-bit weights have 8-bit
weights. On x86 CPUs without VNNI, onnxruntime's int8 kernels add pairs of products in 16
bits, which overflow with such weights, so these files answer worse there than on the
machine that measured them. The service cannot mend a file; it logs which one and the
command that does. Registry entries record their quantization, so no model is opened for it.
"""

from __future__ import annotations

from pathlib import Path

from app.registry import ModelEntry

VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni"})
CPUINFO = Path("/proc/cpuinfo")


def cpu_flags(cpuinfo: Path = CPUINFO) -> frozenset[str] | None:
    """The x86 feature flags of this CPU, or None where there are none to read."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return None  # not x86 (an ARM cpuinfo lists "Features")


def overflows_here(entry: ModelEntry, flags: frozenset[str] | None) -> bool:
    """Whether `entry` is an int8 file with 8-bit weights on an x86 CPU without VNNI."""
    quantization = entry.training.get("quantization")
    if not quantization or "7-bit" in quantization or flags is None:
        return False
    return not flags & VNNI_FLAGS


def requantize_hint(entry: ModelEntry) -> str:
    return (
        f"model {entry.name} {entry.version} has 8-bit int8 weights and this CPU has no VNNI: "
        "onnxruntime's int8 kernels overflow here, so it answers worse than its measured "
        f"figures. Requantize it: python -m training quantize --model {entry.name} "
        f"--name {entry.name} --version NEW --replace --models-dir DIR --data FER2013_DIR "
        "(a writable copy of the models folder; FER2013 in the Kaggle layout, for calibration "
        "and scoring)"
    )
