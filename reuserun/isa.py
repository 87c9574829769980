"""Which build of reuserun's native modules this process loads.

An x86-64 build carries every native module three times, in reuserun/_isa/<level>/: for x86-64
(SSE2, any x86-64 CPU), x86-64-v3 (AVX2 and FMA) and x86-64-v4 (AVX-512). At import, `install`
picks the best level this CPU has, or the one REUSERUN_ISA names, and has Python load each module
of that level under its usual name (reuserun.kernels.conv and so on), so nothing else in reuserun
knows there is a choice. A build for one -march (REUSERUN_ARCH, or a CPU other than x86-64) has its
modules beside the sources, and nothing is chosen.

Results are exact within a level (every frame bit-identical to that level's own dense run); across
levels they may differ in the last bits, as a vectorised and a scalar sum do."""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from pathlib import Path

LEVELS = ("x86-64", "x86-64-v3", "x86-64-v4")
# the native modules, each by its full name; a level's folder holds them by their last part
MODULES = ("reuserun.kernels.base", "reuserun.kernels.conv", "reuserun.kernels.eltwise", "reuserun.kernels.region",
           "reuserun.kernels.info", "reuserun.kernels.train", "reuserun.plan.marks", "reuserun.plan.planner",
           "reuserun.runtime.journal", "reuserun.runtime.driver")
# what each level needs, as /proc/cpuinfo names the features
_V3 = {"avx", "avx2", "fma", "f16c", "bmi1", "bmi2", "abm", "movbe"}
_NEEDS = {"x86-64": set(), "x86-64-v3": _V3,
          "x86-64-v4": _V3 | {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}}
_ROOT = Path(__file__).resolve().parent / "_isa"

_chosen: str | None = None


def _cpu_features() -> set[str] | None:
    """The CPU's feature flags as the kernel reports them (Linux), None where it does not."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def _numpy_levels() -> set[str]:
    """The levels numpy's own CPU dispatch found (where /proc/cpuinfo is missing)."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as found
    except ImportError:  # numpy 1
        from numpy.core._multiarray_umath import __cpu_features__ as found
    levels = {"x86-64"}
    if found.get("X86_V3") or (found.get("AVX2") and found.get("FMA3")):
        levels.add("x86-64-v3")
    if found.get("X86_V4") or (found.get("AVX512_SKX") and "x86-64-v3" in levels):
        levels.add("x86-64-v4")
    return levels


def supported() -> list[str]:
    """The levels this CPU runs, lowest first."""
    flags = _cpu_features()
    if flags is None:
        return [lv for lv in LEVELS if lv in _numpy_levels()]
    return [lv for lv in LEVELS if _NEEDS[lv] <= flags]


def available() -> list[str]:
    """The levels this build carries (none for a build for one -march)."""
    return [lv for lv in LEVELS if (_ROOT / lv.replace("-", "_")).is_dir()]


def chosen() -> str | None:
    """The level whose modules this process loads; None for a build for one -march."""
    return _chosen


def _choose() -> str | None:
    built = available()
    asked = os.environ.get("REUSERUN_ISA", "").strip()
    if not built:
        if asked:
            raise ImportError(f"REUSERUN_ISA={asked!r}, but this reuserun was built for one -march "
                              f"(REUSERUN_ARCH), with no levels to choose from")
        return None
    runs = supported()
    if asked:
        if asked not in LEVELS:
            raise ImportError(f"REUSERUN_ISA must be one of {LEVELS}, got {asked!r}")
        if asked not in runs:
            raise ImportError(f"REUSERUN_ISA={asked!r}: this CPU lacks it (it runs {runs})")
        if asked not in built:
            raise ImportError(f"REUSERUN_ISA={asked!r}: this build carries only {built}")
        return asked
    return max((lv for lv in built if lv in runs), key=LEVELS.index, default=None) or built[0]


class _LevelFinder(importlib.abc.MetaPathFinder):
    """Finds each native module in the chosen level's folder, under its usual name."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.suffix = importlib.machinery.EXTENSION_SUFFIXES[0]

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in MODULES:
            return None
        file = self.folder / (fullname.rsplit(".", 1)[1] + self.suffix)
        loader = importlib.machinery.ExtensionFileLoader(fullname, str(file))
        return importlib.util.spec_from_file_location(fullname, file, loader=loader)


def install() -> None:
    """Choose the level (once per process) and route the native modules' imports to it."""
    global _chosen
    if _chosen is not None or any(isinstance(f, _LevelFinder) for f in sys.meta_path):
        return
    _chosen = _choose()
    if _chosen is not None:
        sys.meta_path.insert(0, _LevelFinder(_ROOT / _chosen.replace("-", "_")))
