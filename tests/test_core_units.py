"""Builds and runs the plain-C unit tests of the engine core (tests/c/test_*.c)
with the system C compiler, so CI exercises the block manager and scheduler
without the Python extension. Each test links only the core files it needs."""
import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORE = os.path.join(ROOT, "csrc", "core")

# test file -> core sources it links with
UNITS = {
    "test_block_manager.c": ["block_manager.c", "common.c"],
    "test_scheduler.c": ["scheduler.c", "block_manager.c", "common.c", "sampling_params.c"],
}

CC = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")


@pytest.mark.skipif(CC is None, reason="no C compiler")
@pytest.mark.parametrize("test", sorted(UNITS))
def test_c_unit(test, tmp_path):
    exe = tmp_path / test[:-2]
    cmd = [CC, "-std=c11", "-Wall", "-Wextra", "-Werror", "-Wno-format-truncation",
           "-D_GNU_SOURCE", "-O1", "-g", "-I" + CORE, os.path.join(ROOT, "tests", "c", test)]
    cmd += [os.path.join(CORE, f) for f in UNITS[test]]
    cmd += ["-o", str(exe), "-lm"]
    build = subprocess.run(cmd, capture_output=True, text=True)
    assert build.returncode == 0, f"compile failed:\n{' '.join(cmd)}\n{build.stderr}"
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, f"{test} failed:\n{run.stdout}\n{run.stderr}"
    assert " passed, 0 failed" in run.stdout, run.stdout
