"""`python -m grenade_py.feedforward` end to end, in a subprocess as a user runs it."""
from __future__ import annotations

import subprocess
import sys

import numpy as np

from grenade_py.feedforward import circles, grid, render


def feedforward(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "grenade_py.feedforward", *args],
                          capture_output=True, text=True, timeout=timeout)


def agreement(ascii_map: str) -> float:
    """Share of the 1071 cells whose drawn value (> 0.5 is '=' or '#') matches the circles."""
    rows = ascii_map.splitlines()
    assert len(rows) == 21 and all(len(r) == 51 for r in rows), ascii_map
    drawn = np.array([[c in "=#" for c in row] for row in rows]).ravel()
    truth = circles(grid()).ravel() > 0.5
    return float(np.mean(drawn == truth))


def test_render_thresholds():
    values = np.zeros(1071)
    values[:6] = [0.2, 0.21, 0.4, 0.6, 0.8, 0.81]
    assert render(values)[:6] == " ..-=#"  # each threshold is inclusive
    assert render(np.ones(1071)).count("#") == 1071


def test_cli_learns_the_circles_and_round_trips(tmp_path):
    model = tmp_path / "ff.gnpy"
    result = feedforward("--seed", "1", "--save", str(model))
    assert result.returncode == 0, result.stderr
    assert "device:" in result.stderr
    score = agreement(result.stdout.rstrip("\n"))
    assert score >= 0.95, (score, result.stdout)
    loaded = feedforward("--load", str(model), "-e", "0")
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout == result.stdout


def test_cli_minibatch_option():
    result = feedforward("--seed", "2", "-e", "20000", "--batch-size", "4", "-r", "0.05")
    assert result.returncode == 0, result.stderr
    assert agreement(result.stdout.rstrip("\n")) > 0.8


def test_cli_errors_are_clear(tmp_path):
    bad = tmp_path / "bad.gnpy"
    bad.write_bytes(b"not a model")
    result = feedforward("--load", str(bad))
    assert result.returncode != 0 and "not a grenade_py model file" in result.stderr
    assert "Traceback" not in result.stderr
    result = feedforward("--train_rate", "-1")
    assert result.returncode != 0 and "rate must be > 0" in result.stderr
    result = feedforward("--device", "9:9")
    assert result.returncode != 0 and "no OpenCL device '9:9'" in result.stderr


def test_cli_says_when_training_diverges():
    result = feedforward("--seed", "1", "-e", "2000", "-r", "1e30", "--momentum", "0.99")
    assert result.returncode != 0, result.stdout
    assert "training diverged" in result.stderr and "Traceback" not in result.stderr


def test_cli_save_to_missing_folder_is_a_clear_error(tmp_path):
    result = feedforward("--seed", "1", "-e", "100", "--save", str(tmp_path / "no" / "m.gnpy"))
    assert result.returncode != 0 and "cannot write" in result.stderr
    assert "Traceback" not in result.stderr
