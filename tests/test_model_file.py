"""Model files: exact round trips (momentum included), and clear errors for bad files."""
from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from grenade_py import (
    D1,
    FullyConnected,
    LearningParameters,
    ModelFileError,
    Network,
    Relu,
    Tanh,
    train,
)
from grenade_py.model_file import MAGIC

LP = LearningParameters(0.05, 0.9, 0.001)


def make(device, seed=1, width=3):
    return Network([FullyConnected(2, width), Tanh(), FullyConnected(width, 1)], input=D1(2),
                   device=device, seed=seed)


def test_round_trip_resumes_training_exactly(device, tmp_path, rng):
    x, y = rng.normal(size=(20, 2)), rng.normal(size=(20, 1))
    net = make(device)
    train(net, LP, x[:10], y[:10], per_example=True)
    path = tmp_path / "net.gnpy"
    net.save(path)
    loaded = Network.load(path, device=device, like=make(device, seed=2))
    assert repr(loaded) == repr(net)
    train(net, LP, x[10:], y[10:], per_example=True)
    train(loaded, LP, x[10:], y[10:], per_example=True)
    for a, b in zip(net.get_parameters() + net.get_momentum(),
                    loaded.get_parameters() + loaded.get_momentum(), strict=True):
        for name in a:
            np.testing.assert_array_equal(a[name], b[name])


def test_load_without_device_uses_file_precision(device, tmp_path):
    net = make(device)
    net.save(tmp_path / "m")
    assert Network.load(tmp_path / "m").device.precision == device.precision


def saved(device, tmp_path):
    path = tmp_path / "net.gnpy"
    make(device).save(path)
    return path, path.read_bytes()


def test_truncated_file(device64, tmp_path):
    path, blob = saved(device64, tmp_path)
    for cut in (5, 20, len(blob) - 8):
        path.write_bytes(blob[:cut])
        with pytest.raises(ModelFileError, match="truncated|not a grenade_py"):
            Network.load(path)


def test_corrupted_data(device64, tmp_path):
    path, blob = saved(device64, tmp_path)
    corrupt = bytearray(blob)
    corrupt[-3] ^= 0xFF
    path.write_bytes(bytes(corrupt))
    with pytest.raises(ModelFileError, match="corrupted.*CRC"):
        Network.load(path)


def test_corrupted_header(device64, tmp_path):
    path, blob = saved(device64, tmp_path)
    (length,) = struct.unpack("<Q", blob[8:16])
    header = json.loads(blob[16:16 + length])
    header["layers"][0]["type"] = "Convolution"
    raw = json.dumps(header).encode()
    path.write_bytes(blob[:8] + struct.pack("<Q", len(raw)) + raw + blob[16 + length:])
    with pytest.raises(ModelFileError, match="corrupted header.*Convolution"):
        Network.load(path)
    path.write_bytes(blob[:16] + b"{" * length + blob[16 + length:])
    with pytest.raises(ModelFileError, match="corrupted header"):
        Network.load(path)


def test_other_version_and_not_a_model(device64, tmp_path):
    path, blob = saved(device64, tmp_path)
    path.write_bytes(MAGIC + bytes([99]) + blob[8:])
    with pytest.raises(ModelFileError, match="version 99"):
        Network.load(path)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + blob[8:])
    with pytest.raises(ModelFileError, match="not a grenade_py model"):
        Network.load(path)
    with pytest.raises(ModelFileError, match="cannot read"):
        Network.load(tmp_path / "missing")


def test_other_architecture(device64, tmp_path):
    path, _ = saved(device64, tmp_path)
    with pytest.raises(ModelFileError, match="another architecture.*FullyConnected 2 3.*"
                                              "expected.*FullyConnected 2 5"):
        Network.load(path, like=make(device64, width=5))
    relu = Network([FullyConnected(2, 3), Relu(), FullyConnected(3, 1)], input=D1(2),
                   device=device64)
    with pytest.raises(ModelFileError, match="another architecture"):
        Network.load(path, like=relu)


def test_failed_save_leaves_old_file_and_no_temp(device64, tmp_path, monkeypatch):
    path, blob = saved(device64, tmp_path)

    def broken(*args):
        raise OSError("disk full")

    monkeypatch.setattr("grenade_py.model_file.os.fsync", broken)
    with pytest.raises(ModelFileError, match="cannot write .*disk full"):
        make(device64, seed=7).save(path)
    assert path.read_bytes() == blob
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_diverged_network_is_not_saved(device64, tmp_path):
    net = make(device64)
    params = net.get_parameters()
    params[0]["weights"][0, 0] = np.inf
    net.layers[0].parameters["weights"].set(params[0]["weights"])  # as a diverged run leaves it
    path = tmp_path / "net.gnpy"
    with pytest.raises(ValueError, match="NaN or Inf .*nothing was written"):
        net.save(path)
    assert list(tmp_path.iterdir()) == []


def test_load_into_other_precision(tmp_path):
    from conftest import get_device

    net = make(get_device("float64"))
    net.save(tmp_path / "m")
    loaded = Network.load(tmp_path / "m", device=get_device("float32"))
    assert loaded.device.precision == "float32"
    for a, b in zip(net.get_parameters(), loaded.get_parameters(), strict=True):
        for name in a:
            assert b[name].dtype == np.float32
            np.testing.assert_allclose(b[name], a[name], rtol=1e-7)


def test_unwritable_path_is_a_model_file_error(device64, tmp_path):
    with pytest.raises(ModelFileError, match="cannot write .*missing"):
        make(device64).save(tmp_path / "missing" / "net.gnpy")
    assert list(tmp_path.iterdir()) == []
