"""`python -m grenade_py.feedforward` end to end, in a subprocess as a user runs it."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from grenade_py import D1, FullyConnected, LearningParameters, Network, fit, train
from grenade_py.feedforward import (
    circles,
    feedforward_network,
    grid,
    render,
    sample,
    seeds,
    train_circles,
)
from grenade_py.network_file import read_optimizer


def feedforward(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "grenade_py.feedforward", *args],
                          capture_output=True, text=True, timeout=timeout)


def drawn(ascii_map: str) -> tuple[np.ndarray, np.ndarray]:
    """Which of the 1071 cells are drawn above 0.5 ('=' or '#'), and which lie in a circle."""
    rows = ascii_map.splitlines()
    assert len(rows) == 21 and all(len(r) == 51 for r in rows), ascii_map
    return (np.array([[c in "=#" for c in row] for row in rows]).ravel(),
            circles(grid()).ravel() > 0.5)


def agreement(ascii_map: str) -> float:
    """Share of the 1071 cells whose drawn value matches the circles (a blank map: 0.847)."""
    cells, truth = drawn(ascii_map)
    return float(np.mean(cells == truth))


def balanced(ascii_map: str) -> float:
    """Mean of the shares of circle and of background cells drawn right: 0.5 for any map that
    draws one value everywhere, blank or full."""
    cells, truth = drawn(ascii_map)
    return float((cells[truth].mean() + (~cells[~truth]).mean()) / 2)


def test_baselines_of_the_map_scores():
    blank = "\n".join([" " * 51] * 21)
    assert agreement(blank) < 0.85 and balanced(blank) == 0.5
    assert balanced(blank.replace(" ", "#")) == 0.5


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
    assert score >= 0.95 and balanced(result.stdout.rstrip("\n")) >= 0.9, result.stdout
    loaded = feedforward("--load", str(model), "-e", "0")
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout == result.stdout


def test_cli_minibatch_option():
    result = feedforward("--seed", "1", "-e", "20000", "--batch-size", "4", "-r", "0.05")
    assert result.returncode == 0, result.stderr
    assert balanced(result.stdout.rstrip("\n")) > 0.8, result.stdout


def test_seed_gives_independent_data_and_weights(device):
    """--seed N seeds the data and the weights from separate streams: the first layer's weights
    are not the first training points scaled (they were, when both used one generator)."""
    data_seed, weights_seed = seeds(1)
    weights = feedforward_network(device, seed=weights_seed).get_parameters()[0]["weights"]
    points, _ = sample(40, np.random.default_rng(data_seed))
    assert abs(np.corrcoef(weights.ravel(), points.ravel())[0, 1]) < 0.3


@pytest.mark.parametrize("batch_size", [1, 3])
def test_training_in_chunks_is_one_pass(device64, monkeypatch, batch_size):
    """The CLI draws and trains its examples CHUNK at a time (memory flat at any --examples):
    the same steps on the same data as one pass over them all."""
    from grenade_py.optimizers import LearningParameters

    lp = LearningParameters(0.01, 0.9, 0.0005)
    chunked, whole = (feedforward_network(device64, seed=2) for _ in range(2))
    monkeypatch.setattr("grenade_py.feedforward.CHUNK", 7)
    train_circles(chunked, lp, 50, batch_size, np.random.default_rng(3), progress=False)
    xs, ys = sample(50, np.random.default_rng(3))
    if batch_size == 1:
        train(whole, lp, xs, ys, per_example=True)
    else:
        fit(whole, lp, xs, ys, batch_size=batch_size, shuffle=False)
    for a, b in zip(chunked.get_parameters(), whole.get_parameters(), strict=True):
        for name in a:
            np.testing.assert_allclose(a[name], b[name], rtol=1e-12, atol=1e-14)


def test_memory_stays_flat_with_examples():
    """Peak memory of the whole CLI at 100k and at 2M examples differs by little (it grew by
    ~200 MB when every example was generated and uploaded at once)."""
    def peak(examples):
        code = ("import resource, runpy, sys\n"
                f"sys.argv = ['feedforward', '-e', '{examples}', '--seed', '1']\n"
                "try:\n    runpy.run_module('grenade_py.feedforward', run_name='__main__')\n"
                "except SystemExit:\n    pass\n"
                "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                timeout=300)
        assert result.returncode == 0, result.stderr
        return int(result.stdout.split()[-1])  # KiB

    assert peak(2_000_000) - peak(100_000) < 30_000


def test_cli_errors_are_clear(tmp_path):
    bad = tmp_path / "bad.gnpy"
    bad.write_bytes(b"not a model")
    result = feedforward("--load", str(bad))
    assert result.returncode != 0 and "not a grenade_py model file" in result.stderr
    assert "Traceback" not in result.stderr
    result = feedforward("--train_rate", "-1")
    assert result.returncode != 0 and "-r/--train_rate: must be > 0" in result.stderr
    result = feedforward("--device", "9:9")
    assert result.returncode != 0 and "no OpenCL device '9:9'" in result.stderr


def test_cli_says_when_training_diverges():
    result = feedforward("--seed", "1", "-e", "2000", "-r", "1e30", "--momentum", "0.99")
    assert result.returncode != 0, result.stdout
    assert "training diverged" in result.stderr and "Traceback" not in result.stderr


def test_cli_save_to_missing_folder_is_a_clear_error(tmp_path):
    result = feedforward("--seed", "1", "-e", "100", "--save", str(tmp_path / "no" / "m.gnpy"))
    assert result.returncode == 2 and "--save: folder" in result.stderr  # before training
    assert "Traceback" not in result.stderr


def test_ctrl_c_stops_a_long_per_example_run(tmp_path):
    """20M examples run for many seconds; SIGINT ends the process within a few, saving what
    was trained to --save (it saved nothing: the run was lost)."""
    import signal
    import time

    model = tmp_path / "m.gnpy"
    process = subprocess.Popen([sys.executable, "-m", "grenade_py.feedforward", "-e",
                                "20000000", "--seed", "1", "--save", str(model)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    process.stderr.readline()  # "device: ...": the device is open, training starts
    time.sleep(1.5)
    assert process.poll() is None
    sent = time.monotonic()
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 130 and time.monotonic() - sent < 5
    assert f"interrupted: saved what was trained to {model}" in err
    assert Network.load(model).steps > 0


def test_cli_trains_with_adam_and_a_schedule():
    """--optimizer adam (its default rate 0.001) with a cosine schedule over the 5 chunks of
    20,000 examples per example, and adamw with clipping in minibatches, both draw the circles
    far better than a map of one value (0.5)."""
    for args in (["--optimizer", "adam", "--schedule", "cosine"],
                 ["--optimizer", "adamw", "-r", "0.01", "--clip-norm", "1", "--batch-size", "8"]):
        result = feedforward("--seed", "1", *args)
        assert result.returncode == 0, result.stderr
        assert balanced(result.stdout.rstrip("\n")) >= 0.85, (args, result.stdout)


def test_cli_resumes_with_the_models_optimiser(tmp_path):
    """--load without --optimizer goes on with the optimiser whose state the model holds (here
    Adam's, not the default SGD, which would read Adam's moments as momentum); another
    --optimizer starts that state from zero, saying so."""
    adam, resumed, switched = (tmp_path / name for name in ("adam", "resumed", "switched"))
    first = feedforward("--seed", "1", "-e", "2000", "--optimizer", "adam", "--save", str(adam))
    assert first.returncode == 0, first.stderr
    again = feedforward("--load", str(adam), "-e", "2000", "--save", str(resumed))
    assert again.returncode == 0 and "optimiser state" not in again.stderr, again.stderr
    other = feedforward("--load", str(adam), "-e", "2000", "--optimizer", "sgd", "--save",
                        str(switched))
    assert other.returncode == 0, other.stderr
    assert "optimiser state is adam's, which sgd cannot use" in other.stderr
    assert [read_optimizer(path) for path in (adam, resumed, switched)] == ["adam", "adam", "sgd"]
    assert Network.load(resumed).steps == 4000 and Network.load(switched).steps == 2000


def test_cli_optimizer_options_are_checked_before_training():
    for args, message in ((["--schedule", "linear"], "--schedule"),
                          (["--optimizer", "adam", "--momentum", "0.5"], "--momentum"),
                          # the option named, not the optimiser's field
                          (["--clip-norm", "0"], "for --clip-norm: must be > 0, got 0.0\n"),
                          (["--momentum", "1"], "for --momentum: must be in [0, 1), got 1.0"),
                          (["--optimizer", "adamw", "--l2", "-1"], "for --l2: must be >= 0"),
                          (["-r", "1e300"], "overflows float32"),
                          (["--save", ""], "--save: is empty"),
                          (["--save", "/"], "is a directory")):
        result = feedforward("--seed", "1", *args)
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr and not result.stdout


@pytest.mark.parametrize("resumed_with", ["sgd", "adam"])
def test_ctrl_c_saves_a_step_even_after_another_optimisers_state_restarted_the_count(
        tmp_path, resumed_with):
    """The CLIs' save_on_interrupt saves once the network took a step inside it, by default.
    A loaded model trained under SGD and resumed under Adam restarts its step count from zero
    (its momentum is no Adam moment): one Adam step leaves fewer steps than before, and was
    trained all the same. Nothing trained, nothing saved."""
    from grenade_py.cli import save_on_interrupt
    from grenade_py.optimizers import Adam

    net = Network([FullyConnected(2, 1)], D1(2), seed=1)
    x, y = np.ones((4, 2)), np.ones((4, 1))
    for _ in range(5):
        train(net, LearningParameters(0.1, 0.9, 0.0), x, y)
    step = LearningParameters(0.1, 0.9, 0.0) if resumed_with == "sgd" else Adam(1e-3)
    for trains, model in ((False, tmp_path / "none.gnpy"), (True, tmp_path / "some.gnpy")):
        with pytest.raises(SystemExit) as ended, save_on_interrupt(net, str(model)):
            if trains:
                train(net, step, x, y)
            raise KeyboardInterrupt
        assert ended.value.code == 130 and model.exists() == trains
    assert net.steps == (6 if resumed_with == "sgd" else 1)
    np.testing.assert_array_equal(Network.load(model).get_parameters()[0]["weights"],
                                  net.get_parameters()[0]["weights"])
