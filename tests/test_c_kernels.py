"""The C kernels built on their own for each target the machine can build and run: the x86-64
levels natively, and AArch64 (NEON) through a cross compiler and qemu-user when they are
installed (.ci/run installs them from Debian's packages). tests/c/test_kernels.c checks the
vector helpers against libm and a conv tile against a scalar conv, bit for bit."""
import os
import shutil
import subprocess

import pytest

from reuserun import isa

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "c", "test_kernels.c")
HEADERS = os.path.join(os.path.dirname(HERE), "reuserun", "kernels")
FLAGS = ["-O2", "-ffp-contract=off", "-fno-math-errno", "-Wno-psabi", "-I", HEADERS]

TARGETS = {
    "x86-64": (["gcc", "-march=x86-64"], []),
    "x86-64-v3": (["gcc", "-march=x86-64-v3"], []),
    "aarch64": (["aarch64-linux-gnu-gcc", "-static"], ["qemu-aarch64"]),
}


def _runnable(target: str) -> str | None:
    """Why this target cannot be built and run here, or None."""
    compiler, runner = TARGETS[target]
    if not os.path.exists(HEADERS):
        return "the kernels' headers are not beside the tests"
    for tool in [compiler[0], *runner]:
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if target.startswith("x86-64"):
        import platform
        if platform.machine() != "x86_64":
            return "not an x86-64 machine"
        if target not in isa.supported():
            return f"this CPU lacks {target}"
    return None


@pytest.mark.parametrize("target", list(TARGETS))
def test_kernels_on_target(target, tmp_path):
    why = _runnable(target)
    if why:
        pytest.skip(why)
    compiler, runner = TARGETS[target]
    binary = str(tmp_path / f"test_kernels_{target}")
    subprocess.run([*compiler, *FLAGS, SOURCE, "-o", binary, "-lm"], check=True, capture_output=True, timeout=300)
    got = subprocess.run([*runner, binary], capture_output=True, text=True, timeout=300)
    assert got.returncode == 0, got.stdout[-3000:]
    assert "0 failure(s)" in got.stdout
