"""The MNIST IDX reader on good and broken files, and training on real MNIST (skipped when
../shared/data/mnist is absent)."""
from __future__ import annotations

import gzip
import struct
import subprocess
import sys

import numpy as np
import pytest
from conftest import MNIST_DIR

from grenade_py import DataError, LearningParameters, fit
from grenade_py.mnist import load_mnist, mnist_network, read_idx

needs_mnist = pytest.mark.skipif(not (MNIST_DIR / "t10k-images-idx3-ubyte.gz").exists(),
                                 reason=f"real MNIST not found at {MNIST_DIR}")


def images_file(count=3, rows=2, cols=4):
    pixels = np.arange(count * rows * cols, dtype=np.uint8)
    return struct.pack(">IIII", 2051, count, rows, cols) + pixels.tobytes(), pixels


def test_read_idx_plain_and_gzipped(tmp_path):
    raw, pixels = images_file()
    (tmp_path / "a").write_bytes(raw)
    (tmp_path / "a.gz").write_bytes(gzip.compress(raw))
    for name in ("a", "a.gz"):
        np.testing.assert_array_equal(read_idx(tmp_path / name), pixels.reshape(3, 2, 4))
    labels = struct.pack(">II", 2049, 4) + bytes([1, 2, 3, 9])
    (tmp_path / "l").write_bytes(labels)
    np.testing.assert_array_equal(read_idx(tmp_path / "l"), [1, 2, 3, 9])


def test_read_idx_errors(tmp_path):
    raw, _ = images_file()
    cases = {
        "truncated": (raw[:-5], "header says 3 items.*truncated"),
        "long": (raw + b"\0", "header says 3 items"),
        "magic": (struct.pack(">I", 2052) + raw[4:], "magic number 2052"),
        "short": (raw[:5], "too short"),
        "gzip": (gzip.compress(raw)[:-12], "truncated gzip|cannot read"),
    }
    for name, (data, message) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(DataError, match=message):
            read_idx(tmp_path / name)
    with pytest.raises(DataError, match="cannot read"):
        read_idx(tmp_path / "missing")


def test_load_mnist_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_mnist(tmp_path / "nowhere")
    with pytest.raises(DataError, match="no file matching"):
        load_mnist(tmp_path)


@needs_mnist
def test_load_real_mnist():
    train_x, train_y, test_x, test_y = load_mnist(MNIST_DIR)
    assert train_x.shape == (24000, 784) and test_x.shape == (10000, 784)
    assert train_y.shape == (24000, 10) and np.all(train_y.sum(axis=1) == 1)
    assert 0 <= train_x.min() and train_x.max() <= 1


@needs_mnist
def test_fit_on_an_mnist_slice_improves_accuracy(device):
    train_x, train_y, test_x, test_y = load_mnist(MNIST_DIR)
    net = mnist_network("mlp", device, seed=1)
    history = fit(net, LearningParameters(0.05, 0.9, 0.0001), train_x[:3000], train_y[:3000],
                  batch_size=64, epochs=3, seed=1, loss="cross_entropy",
                  validation=(test_x[:2000], test_y[:2000]))
    assert history[0]["loss"] > history[-1]["loss"]
    assert history[-1]["val_accuracy"] > 0.85  # chance is 0.1


@needs_mnist
def test_mlp3_learns(device):
    train_x, train_y, test_x, test_y = load_mnist(MNIST_DIR)
    net = mnist_network("mlp3", device, seed=2)
    assert [layer.spec()["type"] for layer in net.layers] == [
        "FullyConnected", "Logit", "FullyConnected", "Logit", "FullyConnected", "Softmax"]
    (record,) = fit(net, LearningParameters(0.1, 0.9, 0.0001), train_x, train_y,
                    batch_size=64, epochs=1, seed=1, loss="cross_entropy",
                    validation=(test_x[:2000], test_y[:2000]))
    assert record["val_accuracy"] > 0.7  # sigmoid nets start slowly: one full epoch


@needs_mnist
def test_mnist_cli(tmp_path):
    result = subprocess.run([sys.executable, "-m", "grenade_py.mnist", "--data", str(MNIST_DIR),
                             "--epochs", "2", "--limit", "2000", "--save",
                             str(tmp_path / "m.gnpy")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()[1:]]
    assert [int(r[0]) for r in rows] == [1, 2]
    assert float(rows[-1][3]) > 0.8  # test accuracy after 2 epochs on 2,000 images
    assert (tmp_path / "m.gnpy").exists()


def test_mnist_cli_bad_data_dir(tmp_path):
    result = subprocess.run([sys.executable, "-m", "grenade_py.mnist", "--data", str(tmp_path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "no file matching" in result.stderr
