"""The shipped models (grenade_py/models): each loads in a fresh process and reproduces the figure
recorded when it was trained; their Grenade-format files hold the same parameters."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import MNIST_DIR

from grenade_py import models
from grenade_py.errors import GrenadeError
from grenade_py.grenade_file import load_grenade

DATA = MNIST_DIR.parent
#: How far a figure may move on another device (float32 rounding flips a near tie or two).
SLACK = {"circles": 2e-4, "mnist-mlp": 3e-4, "mnist-lenet": 3e-4, "mnist-bn": 3e-4,
         "shakespeare": 1.5e-3, "gan-generator": 1e-5}


def needs_data(name: str) -> bool:
    return name.startswith("mnist-") or name == "shakespeare"


def test_every_model_reproduces_its_recorded_figure():
    index = models.index()
    assert set(index) == set(SLACK)
    have = (DATA / "mnist" / "t10k-images-idx3-ubyte.gz").exists() and \
        (DATA / "shakespeare" / "plays.txt").exists()
    names = [name for name in index if have or not needs_data(name)]
    script = ("import json, sys; from pathlib import Path; from grenade_py import models; "
              "print(json.dumps({n: models.measure(n, models.load(n), Path(sys.argv[1])) "
              "for n in sys.argv[2:]}))")
    result = subprocess.run([sys.executable, "-c", script, str(DATA), *names],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout.splitlines()[-1])
    for name in names:
        assert abs(figures[name] - index[name]["value"]) <= SLACK[name], name
    if not have:
        pytest.skip(f"the shared data is not at {DATA}: only {names} were measured")


def test_models_are_what_their_index_says():
    """Real figures (not those of an untrained network), the files small, and the Grenade files
    holding the same parameters."""
    index = models.index()
    assert index["circles"]["value"] > 0.93 and index["mnist-bn"]["value"] >= 0.99
    assert index["mnist-mlp"]["value"] > 0.97 and index["mnist-lenet"]["value"] > 0.98
    assert index["shakespeare"]["value"] > 0.3  # always guessing a space: 0.15
    total = sum(path.stat().st_size for path in models.HERE.iterdir() if path.is_file())
    assert total < 3_500_000
    for name in index:
        grenade = models.HERE / f"{name}.grenade"
        if not grenade.exists():
            continue
        net = models.load(name, device="0:0")
        again = load_grenade(grenade, like=net)
        for a, b in zip(again.get_parameters(), net.get_parameters(), strict=True):
            for key in a:
                np.testing.assert_array_equal(a[key], b[key])
    with pytest.raises(GrenadeError, match="no shipped model 'mnist'"):
        models.load("mnist")


def test_the_listing():
    result = subprocess.run([sys.executable, "-m", "grenade_py.models"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "mnist-bn        test accuracy: 0.99" in result.stdout
    assert len(result.stdout.splitlines()) == len(models.index())

