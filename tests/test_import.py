"""Importing reuserun sets libgomp's spin settings for its own OpenMP runtime only: the process's
environment is as it was afterwards, so later OpenMP libraries and child processes keep theirs."""
import os
import subprocess
import sys

import pytest

HOME = os.path.dirname(os.path.dirname(os.path.abspath(__import__("reuserun").__file__)))

PROBE = """
import ctypes, os, sys
before = {k: os.environ.get(k) for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
import reuserun
after = {k: os.environ.get(k) for k in before}
print("environment", before == after, after)
gomp = [line.split()[-1] for line in open("/proc/self/maps") if "libgomp" in line]
if gomp and reuserun.openmp_enabled():
    sys.stderr.flush()
    ctypes.CDLL(gomp[0]).omp_display_env(1)  # libgomp's settings, verbose, on stderr
"""


def probe(env: dict, given: dict | None = None) -> subprocess.CompletedProcess:
    """PROBE in a fresh process (from /, so no source tree shadows the tested reuserun), with the
    spin variables as `given` (none by default)."""
    env = {k: v for k, v in env.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")} | (given or {}) | {
        "PYTHONPATH": os.pathsep.join(p for p in [HOME, env.get("PYTHONPATH", "")] if p)}
    return subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120, cwd="/")


@pytest.mark.parametrize("given, runtime", [
    ({}, {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "2000"}),
    ({"OMP_WAIT_POLICY": "ACTIVE"}, {"OMP_WAIT_POLICY": "ACTIVE"}),
    ({"GOMP_SPINCOUNT": "0"}, {"GOMP_SPINCOUNT": "0"}),
])
def test_import_sets_its_runtime_and_leaves_the_environment_as_it_was(given, runtime):
    """OpenMP threads spin briefly, then sleep (2000 spins under PASSIVE); a wait policy or spin
    count the user set before the import is left as it is."""
    got = probe(dict(os.environ), given)
    assert got.returncode == 0, got.stderr[-2000:]
    after = {k: given.get(k) for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    assert f"environment True {after}" in got.stdout
    if "OPENMP DISPLAY ENVIRONMENT" in got.stderr:  # libgomp found and OpenMP built in
        for name, value in runtime.items():
            assert f"{name} = '{value}'" in got.stderr
