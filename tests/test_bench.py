"""`python -m grenade_py.bench` runs end to end (tiny sizes; its figures are not checked here:
timings belong to the benchmark, not to tests)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_runs(tmp_path):
    result = subprocess.run([sys.executable, "-m", "grenade_py.bench", "--examples", "2000",
                             "--epoch-examples", "512", "--repeats", "1", "--windows", "20"],
                            cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(ROOT)},
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for section in ("1. feedforward", "2. MNIST", "3. LeNet", "us/example", "4. GEMMs", "of peak",
                    "tiled 1024^3", "5. Shakespeare", "Grenade's semantics", "chars/s",
                    "6. MNIST's `bn` recipe", "s to 99%"):
        assert section in out
    assert "random data shaped as MNIST" in out  # no ../shared beside tmp_path
    assert out.count("grenade_py ") >= 3 and "numpy" in out and "grenade_py, Adam" in out
