"""Every kernel family on a second OpenCL implementation: Oclgrind, a simulator that reports
out-of-bounds accesses, data races and barrier divergence that PoCL forgives (Debian's
`oclgrind`, which the README's test command installs). Runs tests/oclgrind_workload.py under
`oclgrind --data-races`; any diagnostic it prints fails the test."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

WORKLOAD = Path(__file__).with_name("oclgrind_workload.py")


def test_every_kernel_family_is_clean_under_oclgrind():
    oclgrind = shutil.which("oclgrind")
    if oclgrind is None:
        pytest.skip("oclgrind is not installed (apt-get install oclgrind)")
    env = {k: v for k, v in os.environ.items() if k != "PYOPENCL_CTX"}
    result = subprocess.run([oclgrind, "--data-races", sys.executable, str(WORKLOAD)],
                            capture_output=True, text=True, timeout=600, env=env)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "workload done on Oclgrind" in result.stdout  # on Oclgrind's device, not PoCL's
    # Every diagnostic ("Invalid write of size 4 ...", "Read-write data race ...") names its
    # kernel on a line of its own.
    diagnostics = [line for line in output.splitlines() if line.strip().startswith("Kernel:")]
    assert not diagnostics, output[-3000:]
