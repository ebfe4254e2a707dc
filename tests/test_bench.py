"""`python -m grenade_py.bench` runs end to end (tiny sizes; its figures are not checked here:
timings belong to the benchmark, not to tests)."""
from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

from conftest import get_device

from grenade_py.gemm import panel_size

ROOT = Path(__file__).resolve().parent.parent
#: The checkout first on the path, before what the environment has there.
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(
    p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}


def test_bench_runs(tmp_path):
    # (1024^3 runs from W's panels where the default device's forward does)
    large = "gemm_panels_" if panel_size(get_device("float32"), 1024, 1024, 1024) else \
        "gemm_dot_"
    result = subprocess.run([sys.executable, "-m", "grenade_py.bench", "--examples", "2000",
                             "--epoch-examples", "512", "--repeats", "1", "--windows", "20",
                             "--recurrent-windows", "50"],
                            cwd=tmp_path,
                            env=ENV,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for section in ("1. feedforward", "2. MNIST", "one sample's output", "samples' output",
                    "3. LeNet", "us/example", "mnist.hs, a training step", "4. GEMMs",
                    "of peak",
                    "measured FMA peak", "tiled 1024^3", f"1024^3, tuned ({large}",
                    "of the rate of gemm_dot", "of the measured peak (their kernels alone",
                    "5. Shakespeare", "Grenade's semantics", "chars/s",
                    "6. MNIST's `bn` recipe", "s to 99%", "7. Grenade's examples",
                    "ms/window", "mnist (InceptionMini)", "gan-mnist", "50 windows"):
        assert section in out
    assert "random data shaped as MNIST" in out  # no ../shared beside tmp_path
    assert out.count("grenade_py ") >= 3 and "numpy" in out and "grenade_py, Adam" in out
    ratios = next(line for line in out.splitlines() if "against numpy's sgemm" in line)
    assert ratios.count("x784x512") == 4 and "1024^3" in ratios, ratios


def test_bench_markdown_table(tmp_path):
    """--markdown: the machine, device, versions and data, then one table of every main
    figure."""
    result = subprocess.run([sys.executable, "-m", "grenade_py.bench", "--markdown",
                             "--examples", "1000", "--epoch-examples", "256", "--repeats", "1",
                             "--windows", "20"], cwd=tmp_path,
                            env=ENV,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split(":")[0] for line in lines[:5]] == ["- machine", "- device", "- versions",
                                                          "- data", "- date"]
    assert lines[3] == "- data: random data shaped as MNIST (no --data given, and no " \
        "../shared/data/mnist)"  # none beside tmp_path
    assert "1. feedforward" not in result.stdout  # the table instead of the sections
    table = [line for line in lines if line.startswith("| ")]
    # (with PyTorch, a row of grenade_py's MLP epoch over PyTorch's in each round, by batch;
    # on a CPU, one of the GEMMs' rates over numpy's in each round, by product)
    by_round = [row for row in table if "in the same round" in row]
    assert table[0] == "| | grenade_py | numpy | PyTorch (CPU) |" and \
        len(table) == 2 + 25 + len(by_round)
    assert any("1024³" in row for row in by_round)
    for row in by_round:
        values = [float(v) for v in row.split("|")[2].split(",")]
        assert len(values) == (3 if "1024³" in row else 4) and min(values) > 0, row
    for row in table[2:]:
        if row in by_round:
            continue
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        value = float(cells[1].replace(",", ""))
        # random data never reaches 99%: the recipe's time to it is nan then
        assert len(cells) == 4 and (value > 0 or "99%" in row and math.isnan(value)), row


def test_bad_options_are_one_line_errors_before_any_timing(tmp_path):
    """A count below 1, a --data folder that is not MNIST's, a device that is not there: one
    line, no traceback, before anything is timed."""
    for args, said in ((["--repeats", "0"], "0 is not in the range x>=1"),
                       (["--data", str(tmp_path / "absent")], "does not exist"),
                       (["--data", str(tmp_path)], "no file matching"),
                       (["--device", "9:9"], "no OpenCL device '9:9'")):
        result = subprocess.run([sys.executable, "-m", "grenade_py.bench", *args], cwd=tmp_path,
                                env=ENV, capture_output=True, text=True, timeout=300)
        assert result.returncode in (1, 2) and said in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr and "1. feedforward" not in result.stdout


def test_interleaved_runs_take_every_place_in_turn():
    """Each round starts one run further on, so no run is always first; the warm-up round's
    times are left out of the medians."""
    from grenade_py.bench import interleaved

    order: list[str] = []
    runs = {name: (lambda name=name: order.append(name) or len(order)) for name in "abc"}
    ratios: dict[str, float] = {}
    medians = dict(interleaved(runs, repeats=3, ratios=ratios))
    assert order == list("abc" "bca" "cab" "abc")
    # a "time" is the count of calls so far: a's 1 (the warm-up), 6, 8, 10 -> median 8
    assert medians == {"a": 8, "b": 9, "c": 7}
    # a's over b's in each round after the warm-up: 6/4, 8/9, 10/11; over c's 6/5, 8/7, 10/12
    assert ratios == {"b": 10 / 11, "c": 8 / 7}


def test_the_clock_estimate_is_left_out_where_the_driver_reports_no_clock():
    """Intel's CPU runtime reports 0 MHz: no '0 = 0.00 GHz x ...' estimate, a line saying so."""
    from types import SimpleNamespace

    from grenade_py.bench import peak_gflops

    def device(mhz):
        return SimpleNamespace(gpu=False, cl_device=SimpleNamespace(
            name="AMD EPYC ", max_clock_frequency=mhz, max_compute_units=2,
            vendor="Intel(R) Corporation", native_vector_width_float=8))

    assert peak_gflops(device(0)) == (0.0, "AMD EPYC reports no clock")
    estimate, how = peak_gflops(device(2450))
    assert estimate == 2.45 * 2 * 16 * 2 and how.startswith("2.45 GHz x 2 units x 16 lanes")


def _git_checkout() -> bool:
    """Whether the tests run in a git checkout with git at hand (bench_against needs both)."""
    try:
        return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"],
                              capture_output=True).returncode == 0
    except FileNotFoundError:
        return False


def test_bench_against_imports_a_commit_beside_this_tree(tmp_path):
    """`bench_against`'s copy of a commit is a package of its own (its name replaced
    throughout, its kernels beside it), and HEAD's copy trains the MLP to this tree's bits
    wherever the tree's grenade_py/ and kernels/ are HEAD's (a clean checkout, as in CI)."""
    import re

    import numpy as np
    import pytest

    import grenade_py
    from grenade_py import bench_against

    if not _git_checkout():
        pytest.skip("bench_against takes a commit from git: not a git checkout here")
    then = bench_against.import_commit("HEAD", ROOT, tmp_path)
    try:
        assert Path(then.__file__).parent == tmp_path / bench_against.THEN
        assert then.Device is not grenade_py.Device
        kernel_library = sys.modules[f"{bench_against.THEN}.kernel_library"]
        assert kernel_library.kernel_dir() == tmp_path / "kernels"
        named = [p for p in (tmp_path / bench_against.THEN).rglob("*.py")
                 if re.search(r"\bgrenade_py\b", p.read_text())]
        assert not named
        rng = np.random.default_rng(0)
        data = (rng.random((128, 784), dtype=np.float32), np.eye(10)[rng.integers(0, 10, 128)])
        [line] = bench_against.compare(then, "HEAD", ["mlp32"], 1, data)
        assert line.startswith("mlp32: this tree ") and "x by round; same weights: " in line
        clean = subprocess.run(["git", "-C", str(ROOT), "diff", "--quiet", "HEAD", "--",
                                "grenade_py", "kernels"]).returncode == 0
        assert line.endswith("yes") or not clean, line
    finally:
        sys.path.remove(str(tmp_path))
        for name in [m for m in sys.modules if m.split(".")[0] == bench_against.THEN]:
            del sys.modules[name]


def test_bench_against_says_what_it_cannot_compare(tmp_path):
    """A figure it does not know, a commit git does not have (or no git): one line, no
    traceback."""
    import shutil

    missing = "git could not give 'no-such-commit'" if shutil.which("git") else "needs git"
    for args, said in ((["HEAD", "--figures", "mlp32,gan"], "gan: choose from mlp32"),
                       (["no-such-commit", "--repo", str(ROOT), "--figures", "mlp32",
                         "--examples", "64"], missing)):
        result = subprocess.run([sys.executable, "-m", "grenade_py.bench_against", *args],
                                cwd=tmp_path, env=ENV, capture_output=True, text=True,
                                timeout=300)
        assert result.returncode in (1, 2) and said in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr and not result.stdout
