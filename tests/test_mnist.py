"""The MNIST IDX reader on good and broken files, and training on real MNIST (skipped when
../shared/data/mnist is absent)."""
from __future__ import annotations

import gzip
import json
import signal
import struct
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import MNIST_DIR

from grenade_py import DataError, LearningParameters, Network, fit
from grenade_py.datasets import load_mnist, read_idx
from grenade_py.mnist import mnist_network
from grenade_py.network_file import read_metadata

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
        "gzip": (gzip.compress(raw)[:-12], "truncated or corrupted gzip|cannot read"),
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


def write_mnist(folder, images, labels, gz=True):
    """A fake MNIST folder holding `images` (count, rows, cols) and `labels` as both sets."""
    folder.mkdir(exist_ok=True)
    raw_images = struct.pack(">IIII", 2051, *images.shape) + images.astype(np.uint8).tobytes()
    raw_labels = struct.pack(">II", 2049, len(labels)) + labels.astype(np.uint8).tobytes()
    for kind in ("train", "t10k"):
        for name, raw in (("images-idx3", raw_images), ("labels-idx1", raw_labels)):
            path = folder / f"{kind}-{name}-ubyte{'.gz' if gz else ''}"
            path.write_bytes(gzip.compress(raw) if gz else raw)


def test_load_mnist_refuses_what_is_not_mnist(tmp_path):
    write_mnist(tmp_path / "small", np.zeros((2, 27, 28)), np.array([1, 2]))
    with pytest.raises(DataError, match="27x28; MNIST has 28x28"):
        load_mnist(tmp_path / "small")
    write_mnist(tmp_path / "empty", np.zeros((0, 28, 28)), np.array([]))
    with pytest.raises(DataError, match="images are 0 of"):
        load_mnist(tmp_path / "empty")
    write_mnist(tmp_path / "corrupt", np.zeros((2, 28, 28)), np.array([1, 2]))
    path = tmp_path / "corrupt" / "train-images-idx3-ubyte.gz"
    blob = bytearray(path.read_bytes())
    blob[10] = 0xFF  # the first deflate block's type: zlib.error, not a truncation
    path.write_bytes(bytes(blob))
    with pytest.raises(DataError, match="truncated or corrupted gzip"):
        load_mnist(tmp_path / "corrupt")
    write_mnist(tmp_path / "fewer", np.zeros((3, 28, 28)), np.array([1, 2]))
    with pytest.raises(DataError, match=r"fewer: 3 \*train\* images but 2 labels$"):
        load_mnist(tmp_path / "fewer")
    write_mnist(tmp_path / "labels", np.zeros((2, 28, 28)), np.array([1, 10]))
    with pytest.raises(DataError, match=r"\*train\* labels go up to 10, not 0-9$"):
        load_mnist(tmp_path / "labels")
    write_mnist(tmp_path / "swapped", np.zeros((2, 28, 28)), np.array([1, 2]))
    for name in ("images-idx3", "labels-idx1"):
        (tmp_path / "swapped" / f"train-{name}-ubyte.gz").rename(tmp_path / "swapped" / name)
    for name, other in (("images-idx3", "labels-idx1"), ("labels-idx1", "images-idx3")):
        (tmp_path / "swapped" / name).rename(tmp_path / "swapped" / f"train-{other}-ubyte.gz")
    with pytest.raises(DataError, match=r"\*train\* images and labels files are swapped$"):
        load_mnist(tmp_path / "swapped")
    (tmp_path / "cut").write_bytes(struct.pack(">III", 2051, 1, 28))
    with pytest.raises(DataError, match="image header cut short$"):
        read_idx(tmp_path / "cut")


def mnist_cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "grenade_py.mnist", *args],
                          capture_output=True, text=True, timeout=timeout)


def test_mnist_cli_resumes_where_it_stopped(tmp_path):
    """3 epochs in one run equal 1 saved and 2 more from --load, to the bit: the model file
    holds the optimiser (Adam, not the default SGD) and the epochs done, from which the
    resumed run numbers, schedules and shuffles its epochs."""
    rng = np.random.default_rng(3)
    write_mnist(tmp_path / "d", rng.integers(0, 256, (48, 28, 28)), rng.integers(0, 10, 48))
    common = ("--data", str(tmp_path / "d"), "--batch-size", "16", "--schedule",
              "exponential:0.5")
    whole = mnist_cli(*common, "--epochs", "3", "--optimizer", "adam", "--save",
                      str(tmp_path / "whole"))
    first = mnist_cli(*common, "--epochs", "1", "--optimizer", "adam", "--save",
                      str(tmp_path / "first"))
    rest = mnist_cli(*common, "--epochs", "2", "--load", str(tmp_path / "first"), "--save",
                     str(tmp_path / "rest"))
    for result in (whole, first, rest):
        assert result.returncode == 0, result.stderr
    assert [line.split()[0] for line in rest.stdout.splitlines()[1:]] == ["2", "3"]
    # loss and accuracies of epochs 2 and 3
    assert [line.split()[1:4] for line in rest.stdout.splitlines()[1:]] == [
        line.split()[1:4] for line in whole.stdout.splitlines()[2:]]
    assert read_metadata(tmp_path / "rest") == {"epochs": 3}
    a, b = (Network.load(tmp_path / name) for name in ("whole", "rest"))
    for x, y in zip(a.get_parameters(), b.get_parameters(), strict=True):
        for name in x:
            np.testing.assert_array_equal(x[name], y[name])


def test_mnist_cli_scores_a_loaded_model_with_zero_epochs(tmp_path):
    """--epochs 0 prints the loaded model's test scores (the ones its last epoch printed) and
    trains nothing."""
    rng = np.random.default_rng(4)
    write_mnist(tmp_path / "d", rng.integers(0, 256, (48, 28, 28)), rng.integers(0, 10, 48))
    common = ("--data", str(tmp_path / "d"), "--batch-size", "16")
    trained = mnist_cli(*common, "--epochs", "2", "--save", str(tmp_path / "m"))
    scored = mnist_cli(*common, "--epochs", "0", "--load", str(tmp_path / "m"))
    for result in (trained, scored):
        assert result.returncode == 0, result.stderr
    accuracy = trained.stdout.splitlines()[-1].split()[3]
    assert scored.stdout.split() == ["test", "loss", scored.stdout.split()[2],
                                     "test", "accuracy", accuracy, "after", "2", "epochs"]


def test_mnist_cli_checks_arguments_before_training(tmp_path):
    write_mnist(tmp_path / "d", np.zeros((4, 28, 28)), np.array([1, 2, 3, 4]))
    result = mnist_cli("--data", str(tmp_path / "d"), "--save", str(tmp_path / "no" / "m"))
    assert result.returncode == 2 and "does not exist" in result.stderr
    assert "epoch" not in result.stdout and "Traceback" not in result.stderr
    result = mnist_cli("--data", str(tmp_path / "d"), "--seed", "-1")
    assert result.returncode == 2 and "--seed" in result.stderr


def test_mnist_cli_stops_a_diverged_run_and_saves_nothing(tmp_path):
    """The error names the option to lower as --help spells it; no NaN model is written."""
    rng = np.random.default_rng(0)
    write_mnist(tmp_path / "d", rng.integers(0, 256, (8, 28, 28)), rng.integers(0, 10, 8))
    result = mnist_cli("--data", str(tmp_path / "d"), "--epochs", "3", "-r", "1e30", "--save",
                       str(tmp_path / "m"))
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    option = result.stderr.strip().splitlines()[-1].split("lower ")[-1]
    assert result.stderr.strip().endswith(f"training diverged (loss is not finite); lower {option}")
    assert f" {option}" in mnist_cli("--help").stdout
    rows = [line.split() for line in result.stdout.splitlines()[1:]]
    assert rows[-1][1] == "nan" and len(rows) < 3  # stopped at the first diverged epoch
    assert "nothing was written" in result.stderr and not (tmp_path / "m").exists()


@needs_mnist
def test_mnist_cli_with_adamw_a_schedule_and_clipping(tmp_path):
    result = subprocess.run([sys.executable, "-m", "grenade_py.mnist", "--data", str(MNIST_DIR),
                             "--epochs", "2", "--limit", "2000", "--optimizer", "adamw",
                             "--schedule", "exponential:0.5", "--clip-norm", "5"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()[1:]]
    assert float(rows[-1][3]) > 0.8  # test accuracy after 2 epochs on 2,000 images


def test_mnist_cli_refuses_batch_norm_one_row_at_a_time(tmp_path):
    """BatchNorm cannot train per example: a one-line error before the first step."""
    write_mnist(tmp_path / "d", np.zeros((4, 28, 28)), np.array([1, 2, 3, 4]))
    result = mnist_cli("--data", str(tmp_path / "d"), "--arch", "bn", "--batch-size", "1")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "Error: BatchNorm 96 on D1 96 cannot train on one row at a time (each feature's "
        "variance over one row is 0): train it on minibatches of 2 or more")
    assert len(result.stdout.splitlines()) == 1  # the header only: no epoch trained


def test_mnist_cli_checks_optimizer_options_before_training(tmp_path):
    write_mnist(tmp_path / "d", np.zeros((4, 28, 28)), np.array([1, 2, 3, 4]))
    result = mnist_cli("--data", str(tmp_path / "d"), "--schedule", "step:0:2")
    assert result.returncode == 2 and "--schedule" in result.stderr
    assert "epoch" not in result.stdout and "Traceback" not in result.stderr


@needs_mnist
def test_mnist_cli_saves_on_interrupt_and_resumes(tmp_path):
    """Ctrl-C after an epoch saves what was trained; --load resumes from it."""
    model = tmp_path / "m.gnpy"
    process = subprocess.Popen([sys.executable, "-m", "grenade_py.mnist", "--data",
                                str(MNIST_DIR), "--limit", "3000", "--epochs", "1000",
                                "--save", str(model)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline().startswith("epoch")  # the header
    first = process.stdout.readline().split()  # the first finished epoch
    assert first[0] == "1", first
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 130 and "saved what was trained" in err, err
    resumed = mnist_cli("--data", str(MNIST_DIR), "--limit", "3000", "--epochs", "1",
                        "--load", str(model))
    assert resumed.returncode == 0, resumed.stderr
    assert float(resumed.stdout.splitlines()[1].split()[3]) > 0.8  # test accuracy, resumed


@needs_mnist
def test_lenet_cli_learns_far_above_chance():
    result = mnist_cli("--data", str(MNIST_DIR), "--arch", "lenet", "--epochs", "3", "--limit",
                       "3000")
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()[1:]]
    assert float(rows[-1][3]) > 0.7, result.stdout  # test accuracy; chance is 0.1


def test_mnist_cli_checks_an_arch_file_before_training(tmp_path):
    write_mnist(tmp_path / "d", np.zeros((4, 28, 28)), np.array([1, 2, 3, 4]))
    arch = tmp_path / "net.json"
    for text, message in (("{", "cannot read"),
                          ('{"type": "Network", "input": "D1 784", "layers": [{"type": "X"}]}',
                           "network.layers[0]: unknown layer type 'X'"),
                          ('{"type": "Network", "input": "D1 784", "layers": [{"type": '
                           '"FullyConnected", "i": 784, "o": 10}]}',
                           "maps D1 784 to D1 10; MNIST needs")):
        arch.write_text(text)
        result = mnist_cli("--data", str(tmp_path / "d"), "--arch-file", str(arch))
        assert result.returncode == 2 and message in result.stderr, result.stderr
        assert "Traceback" not in result.stderr and "epoch" not in result.stdout
    # --arch given beside it is not silently ignored (--arch mlp, the default, neither)
    arch.write_text(json.dumps(mnist_network("mlp").spec()))
    result = mnist_cli("--data", str(tmp_path / "d"), "--arch-file", str(arch), "--arch", "mlp")
    assert result.returncode == 2 and "give --arch or --arch-file, not both" in result.stderr


@needs_mnist
def test_mnist_cli_trains_a_network_from_an_arch_file(tmp_path):
    """A JSON spec (here the mlp's own, from spec()) trains as --arch does."""
    arch = tmp_path / "net.json"
    arch.write_text(json.dumps(mnist_network("mlp").spec()))
    result = subprocess.run([sys.executable, "-m", "grenade_py.mnist", "--data", str(MNIST_DIR),
                             "--epochs", "2", "--limit", "2000", "--arch-file", str(arch)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()[1:]]
    assert float(rows[-1][3]) > 0.8  # test accuracy after 2 epochs on 2,000 images


@needs_mnist
def test_the_bn_recipe_learns(tmp_path):
    """--arch bn brings its recipe (AdamW, cosine schedule, He's initialisation): on 3,000
    images for 2 epochs it is past 90% on the test set."""
    result = subprocess.run([sys.executable, "-m", "grenade_py.mnist", "--data", str(MNIST_DIR),
                             "--arch", "bn", "--epochs", "2", "--limit", "3000"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "BatchNorm 12" in result.stderr and "Adam" not in result.stderr
    rows = [line.split() for line in result.stdout.splitlines()[1:]]
    assert len(rows) == 2 and float(rows[-1][3]) > 0.9


def test_idx_sizes_that_would_wrap_int64_are_refused(tmp_path):
    """count x rows x cols = 2^31 x 2^31 x 4 = 2^64 wraps to 0 in int64, which matched this
    16-byte file and crashed in reshape; as Python ints it does not match."""
    path = tmp_path / "wrap-images-idx3-ubyte"
    path.write_bytes(struct.pack(">IIII", 2051, 2**31, 2**31, 4))
    with pytest.raises(DataError, match="header says"):
        read_idx(path)


@needs_mnist
def test_ctrl_c_in_an_epoch_without_a_terminal(tmp_path):
    """With no progress bar (stderr is not a terminal) fit still keeps only a few steps queued,
    so Ctrl-C is honoured within seconds, not at the end of an epoch (5.2 s here; many epochs,
    so the run outlasts the wait before the signal)."""
    process = subprocess.Popen([sys.executable, "-m", "grenade_py.mnist", "--data",
                                str(MNIST_DIR), "--arch", "inception", "--batch-size", "16",
                                "--epochs", "50"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline().startswith("epoch")  # training has begun
    time.sleep(6)  # long enough to have queued the whole epoch, were nothing bounding it
    process.send_signal(signal.SIGINT)
    sent = time.monotonic()
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130 and "nothing saved" in err, err
    assert time.monotonic() - sent < 2  # (when fit queued the whole epoch: about 5 s here)
