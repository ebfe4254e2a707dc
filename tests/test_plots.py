"""The CLIs' --plot (real PNGs, read back: their size, and not blank) and --log (a JSON line per
epoch or round, as fit's history holds it)."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import MNIST_DIR

from grenade_py.feedforward import main as feedforward_main
from grenade_py.mnist import main as mnist_main
from grenade_py.recurrent import main as recurrent_main
from grenade_py.shakespeare import main as shakespeare_main

image = pytest.importorskip("matplotlib.image", reason="--plot needs matplotlib "
                                                       "(pip install '.[test]')")
PLAYS = MNIST_DIR.parent / "shakespeare" / "plays.txt"


def read_png(path) -> np.ndarray:
    """The picture's pixels; it is a PNG of the size --plot draws, and not one colour."""
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    pixels = image.imread(path)
    assert pixels.shape[0] >= 300 and pixels.shape[1] >= 400
    assert pixels[..., :3].std() > 0.05  # lines, labels and a background, not blank
    return pixels


def records(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def run(main, arguments) -> str:
    result = CliRunner().invoke(main, [str(a) for a in arguments])
    assert result.exit_code == 0, result.output
    return result.output


def test_mnist_plot_and_log(tmp_path):
    if not (MNIST_DIR / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip(f"real MNIST not found at {MNIST_DIR}")
    run(mnist_main, ["--data", MNIST_DIR, "--limit", 300, "--epochs", 2, "--log",
                     tmp_path / "m.jsonl", "--plot", tmp_path / "m.png"])
    logged = records(tmp_path / "m.jsonl")
    assert [r["epoch"] for r in logged] == [1, 2]
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "rate", "seconds"} <= set(logged[0])
    assert read_png(tmp_path / "m.png").shape[:2] == (360, 1000)


def test_feedforward_map_and_log(tmp_path):
    output = run(feedforward_main, ["-e", 70000, "--seed", 1, "--plot", tmp_path / "f.png",
                                    "--log", tmp_path / "f.jsonl"])
    assert "#" in output  # the ASCII map is still printed
    read_png(tmp_path / "f.png")
    logged = records(tmp_path / "f.jsonl")
    assert [r["examples"] for r in logged] == [65536, 70000]
    assert logged[-1]["val_accuracy"] > 0.85  # the circles cover ~17%: chance-level is 0.83


def test_recurrent_rounds(tmp_path):
    run(recurrent_main, ["-e", 300, "--seed", 1, "--log", tmp_path / "r.jsonl", "--plot",
                         tmp_path / "r.png"])
    logged = records(tmp_path / "r.jsonl")
    assert [r["windows"] for r in logged] == [30 * k for k in range(1, 11)]
    assert all(0 <= r["val_accuracy"] <= 1 and r["val_loss"] >= 0 for r in logged)
    read_png(tmp_path / "r.png")


def test_shakespeare_rounds(tmp_path):
    if not PLAYS.exists():
        pytest.skip(f"the plays are not at {PLAYS}")
    run(shakespeare_main, ["--data", PLAYS, "-e", 100, "--sample-length", 5, "--seed", 1,
                           "--log", tmp_path / "s.jsonl", "--plot", tmp_path / "s.png"])
    assert [r["round"] for r in records(tmp_path / "s.jsonl")] == list(range(1, 11))
    read_png(tmp_path / "s.png")


def test_without_matplotlib_plot_is_refused_before_training(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib fails
    result = CliRunner().invoke(recurrent_main, ["-e", 10, "--plot", str(tmp_path / "r.png")])
    assert result.exit_code == 1
    assert "--plot needs matplotlib: pip install matplotlib (the [plot] extra)" in result.output
    assert "Training network" not in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(recurrent_main, ["-e", 10, "--log", str(tmp_path / "r.jsonl")])
    assert result.exit_code == 0 and len(records(tmp_path / "r.jsonl")) == 10


def test_a_diverged_epoch_is_logged_as_strict_json(tmp_path):
    """The NaN loss of a diverged run is null in the log, which strict JSON readers (jq, a
    browser's JSON.parse) take; it was written as NaN, which they refuse."""
    import math

    from grenade_py.plots import RunLog

    log = tmp_path / "run.jsonl"
    run_log = RunLog(str(log), None, "a run")
    run_log({"epoch": 1, "loss": float("nan"), "val_loss": math.inf, "accuracy": 0.1})
    line = log.read_text().splitlines()[0]
    assert json.loads(line, parse_constant=lambda name: pytest.fail(f"{name} in the log")) == \
        {"epoch": 1, "loss": None, "val_loss": None, "accuracy": 0.1}
    assert math.isnan(run_log.records[0]["loss"])  # the plot's records keep the gap
