"""The examples run and reach what they claim."""
from __future__ import annotations

import importlib.util
import os
import struct
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_xor_reaches_near_zero_error():
    assert load("xor").main() < 1e-3


def test_circles_library_example():
    assert load("circles").main(examples=30_000) > 0.9


def test_gan_example_runs(tmp_path):
    """Grenade's GAN, two short iterations: it trains and draws (learning to draw digits takes
    many minutes, as in Grenade)."""
    import pytest
    from conftest import MNIST_DIR

    if not (MNIST_DIR / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip(f"real MNIST not found at {MNIST_DIR}")
    from click.testing import CliRunner

    gan = load("gan_mnist")
    result = CliRunner().invoke(gan.main, ["--data", str(MNIST_DIR), "--iterations", "2",
                                           "--examples", "64", "--png", str(tmp_path / "s.png"),
                                           "--save", str(tmp_path / "g.gnpy")])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("iteration 1:") and len(lines) == 2 * 29
    assert all(len(line) == 28 and set(line) <= set(" .-=#") for line in lines[1:29])
    png = (tmp_path / "s.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert struct.unpack(">II", png[16:24]) == (8 * 30 - 2, 2 * 30 - 2)  # 8 samples, 2 passes
    from grenade_py import Network

    assert repr(Network.load(tmp_path / "g.gnpy")).startswith("Network '[FullyConnected 80 256")


def test_gan_noise_is_independent_of_the_weights():
    """The noise does not repeat the discriminator's initial draws (it did: one seed fed both,
    so the first noise vector was the first convolution kernel x 5)."""
    import numpy as np

    gan = load("gan_mnist")
    discriminator_seed, generator_seed, noise = gan.streams(1)
    discriminator, _ = gan.networks(discriminator_seed, generator_seed)
    kernel = discriminator.get_parameters()[0]["kernel"].ravel()
    first = noise.uniform(-1, 1, size=80)
    assert abs(np.corrcoef(first[:25], kernel[:25])[0, 1]) < 0.9


def test_gan_example_errors_are_one_line(tmp_path):
    """A bad rate or a folder without MNIST: a one-line usage or data error, no traceback (both
    were tracebacks)."""
    from click.testing import CliRunner

    gan = load("gan_mnist")
    for args, code, message in ((["--data", str(tmp_path), "-r", "-1"], 2,
                                 "Invalid value for -r/--train_rate: must be > 0, got -1.0"),
                                (["--data", str(tmp_path)], 1, "Error: no file matching")):
        result = CliRunner().invoke(gan.main, args)
        assert result.exit_code == code and message in result.output, result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)


def test_ctrl_c_in_the_gan_example_saves_the_generator(tmp_path):
    """SIGINT ends a long run with status 130 and the generator trained so far in --save
    (it printed 'Aborted!' and saved nothing); no --load to offer, as the critic is not kept."""
    import signal
    import subprocess
    import sys

    import pytest
    from conftest import MNIST_DIR

    if not (MNIST_DIR / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip(f"real MNIST not found at {MNIST_DIR}")
    from grenade_py import Network

    model = tmp_path / "g.gnpy"
    process = subprocess.Popen([sys.executable, str(EXAMPLES / "gan_mnist.py"), "--data",
                                str(MNIST_DIR), "--iterations", "100000", "--examples", "64",
                                "--save", str(model)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(EXAMPLES.parent)})
    assert process.stdout.readline().startswith("iteration 1:"), process.stderr.read()
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 130, err
    assert err.rstrip().endswith(f"interrupted: saved what was trained to {model}")
    assert Network.load(model).steps > 0
