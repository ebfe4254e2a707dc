"""Model files: exact round trips (momentum included), and clear errors for bad files."""
from __future__ import annotations

import json
import os
import struct
import zlib

import numpy as np
import pytest

from grenade_py import (
    D1,
    LSTM,
    FullyConnected,
    LearningParameters,
    ModelFileError,
    Network,
    RecurrentNetwork,
    Relu,
    Tanh,
    model_file,
    train,
)
from grenade_py.model_file import MAGIC
from grenade_py.network_file import read_optimizer

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


def test_a_model_saved_without_its_optimiser_state(device, tmp_path, rng):
    """A third of the size; loads with zero moments, the same parameters and outputs; a file
    that lacks momentum without saying so is still refused."""
    net = make(device, width=40)
    train(net, LP, rng.normal(size=(10, 2)), rng.normal(size=(10, 1)), per_example=True)
    net.save(tmp_path / "full")
    net.save(tmp_path / "lean", optimizer_state=False)
    full, lean = (os.path.getsize(tmp_path / name) for name in ("full", "lean"))
    assert lean < 0.45 * full
    loaded = Network.load(tmp_path / "lean", device=device)
    for a, b in zip(loaded.get_parameters(), net.get_parameters(), strict=True):
        for name in a:
            np.testing.assert_array_equal(a[name], b[name])
    assert all(np.all(v == 0) for p in loaded.get_momentum() + loaded.get_second()
               for v in p.values())
    assert (loaded.steps, loaded.optimizer_name) == (0, None)  # as a new network's
    assert (Network.load(tmp_path / "full").steps, read_optimizer(tmp_path / "full")) == (
        net.steps, "sgd")
    header, arrays = model_file.read(tmp_path / "lean")
    del header["optimizer_state"]
    model_file.write(tmp_path / "unmarked", header, arrays)
    with pytest.raises(ModelFileError, match="momentum missing"):
        Network.load(tmp_path / "unmarked")


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
    path.write_bytes(blob + b"\0")  # (another file's tail left by a copy, say)
    with pytest.raises(ModelFileError, match="has trailing bytes after its checksum$"):
        Network.load(path)


def test_corrupted_data(device64, tmp_path):
    path, blob = saved(device64, tmp_path)
    corrupt = bytearray(blob)
    corrupt[-3] ^= 0xFF
    path.write_bytes(bytes(corrupt))
    with pytest.raises(ModelFileError, match="corrupted.*CRC"):
        Network.load(path)


def rewrite(blob, edit):
    """The file with its JSON header changed by `edit` and a valid checksum: a crafted file."""
    (length,) = struct.unpack("<Q", blob[8:16])
    header = json.loads(blob[16:16 + length])
    edit(header)
    raw = json.dumps(header).encode()
    body = blob[:8] + struct.pack("<Q", len(raw)) + raw + blob[16 + length:-4]
    return body + struct.pack("<I", zlib.crc32(body))


def test_corrupted_header(device64, tmp_path):
    path, blob = saved(device64, tmp_path)
    (length,) = struct.unpack("<Q", blob[8:16])
    digit = blob.index(b'"offset": ', 16) + len(b'"offset": ')  # the checksum covers the header
    path.write_bytes(blob[:digit] + b"9" + blob[digit + 1:])
    with pytest.raises(ModelFileError, match="corrupted"):
        Network.load(path)
    path.write_bytes(rewrite(blob, lambda h: h["network"]["layers"][0].update(type="Conv")))
    with pytest.raises(ModelFileError, match="corrupted header.*Conv"):
        Network.load(path)
    path.write_bytes(blob[:16] + b"{" * length + blob[16 + length:])
    with pytest.raises(ModelFileError, match="corrupted header"):
        Network.load(path)


def test_metadata_that_is_not_an_object(device64, tmp_path):
    from grenade_py.network_file import read_metadata

    path, blob = saved(device64, tmp_path)
    path.write_bytes(rewrite(blob, lambda h: h.update(metadata=["a"])))
    with pytest.raises(ModelFileError, match=r"corrupted header \(metadata is not an object\)"):
        read_metadata(path)


@pytest.mark.parametrize("state, message", [
    ({"1": {"key": [1], "step": 0}}, r"Dropout state \{'key': \[1\], 'step': 0\} is not a key "
     "and a step"),
    ({"1": {"key": [1, 2], "step": -3}}, "is not a key and a step"),
    ({"2": {"running_mean": [0.0], "running_var": [1.0, 1.0]}}, "BatchNorm state .* is not 2 "
     "running means and variances"),
    ({"2": {"running_mean": [0.0, 0.0], "running_var": [1.0, -1.0]}}, "is not 2 running"),
])
def test_layer_states_that_do_not_fit_are_refused(device64, tmp_path, state, message):
    """A Dropout's key and step or a BatchNorm's running statistics that a file's header holds
    are checked as they are set; the error names the file."""
    from grenade_py import BatchNorm, Dropout

    net = Network([FullyConnected(3, 2), Dropout(0.5), BatchNorm(2)], input=D1(3),
                  device=device64, seed=1)
    path = tmp_path / "states.gpy"
    net.save(path)
    path.write_bytes(rewrite(path.read_bytes(), lambda h: h["layer_state"].update(state)))
    with pytest.raises(ModelFileError, match=f"^{path}.*{message}"):
        Network.load(path, device=device64)


def huge(header):
    """FullyConnected 2 30000000, Tanh, FullyConnected 30000000 1: a consistent network whose
    parameters the file's arrays do not hold."""
    layers = header["network"]["layers"]
    layers[0]["o"] = layers[2]["i"] = 30_000_000
    header["shapes"] = ["D1 2", "D1 30000000", "D1 30000000", "D1 1"]


@pytest.mark.parametrize("edit, message", [
    (lambda h: h["arrays"][1].update(offset=0), "offset 0 is not"),
    (lambda h: h["arrays"][0].update(shape=[10**30]), "bad array shape"),
    (lambda h: h["network"]["layers"][0].update(o=30_000_000), "takes D1 3, but its input is"),
    (huge, "no parameters 'weights' of shape"),
    (lambda h: h["arrays"][0].update(name="bias"), "no parameters 'bias'"),
    (lambda h: h["arrays"][0].update(layer=7), "belongs to no layer"),
    (lambda h: h["arrays"][0].update(role="velocity"), "belongs to no layer"),
    (lambda h: h.update(format="keras"), "holds no grenade_py Network"),
    (lambda h: h.update(shapes=["D1 2", "D1 3", "D1 3", "D1 2"]), "stored shapes .* differ"),
    (lambda h: h.update(steps=-1), r"step counts \[-1, 0\] are not counts"),
    (lambda h: h.update(state_steps=1.5), "are not counts"),
    (lambda h: h.update(layer_state=[]), "layer_state is not an object"),
    (lambda h: h["network"]["layers"].__setitem__(1, "Tanh"), r"layers\[1\]: a layer is an "
     "object with a \"type\""),
    (lambda h: h["network"].pop("layers"), r"network \(Network\): needs \"layers\", a list"),
    (lambda h: h["network"]["layers"].__setitem__(1, {"type": "Merge", "a": {"type": "Tanh"}}),
     r"layers\[1\] \(Merge\): needs branches \"a\" and \"b\""),
])
def test_crafted_headers_are_refused_before_building(device64, tmp_path, edit, message):
    """A header whose arrays do not tile the data, or do not fit the layers, is refused before
    anything is allocated (a claimed FullyConnected 2 30000000 allocates nothing)."""
    path, blob = saved(device64, tmp_path)
    path.write_bytes(rewrite(blob, edit))
    with pytest.raises(ModelFileError, match=message):
        Network.load(path, device=device64)


def test_mutated_files_fail_or_load_identically(device64, tmp_path):
    """Bit flips, byte edits and cuts of a saved file: each raises ModelFileError or loads the
    very network that was saved."""
    net = make(device64)
    path = tmp_path / "net.gnpy"
    net.save(path)
    blob = path.read_bytes()
    rng = np.random.default_rng(0)
    loaded = 0
    for trial in range(3000):
        mutated = bytearray(blob)
        if trial % 4 == 0:
            mutated = mutated[:rng.integers(len(blob))]
        else:
            at = rng.integers(len(blob))
            mutated[at] = mutated[at] ^ (1 << rng.integers(8)) if trial % 2 else ord(
                "0123456789"[rng.integers(10)])
        path.write_bytes(bytes(mutated))
        try:
            other = Network.load(path, device=device64)
        except ModelFileError:
            continue
        loaded += 1
        assert bytes(mutated) == blob or repr(other) == repr(net)
        for a, b in zip(net.get_parameters(), other.get_parameters(), strict=True):
            for name in a:
                np.testing.assert_array_equal(a[name], b[name])
    assert loaded < 300  # nearly every mutation changes something the file checks


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


def test_the_other_kind_of_network_says_which_load_reads_it(device64, tmp_path):
    path, _ = saved(device64, tmp_path)
    with pytest.raises(ModelFileError, match="holds a Network: read it with Network.load"):
        RecurrentNetwork.load(path)
    RecurrentNetwork([LSTM(2, 3)], input=D1(2), device=device64).save(tmp_path / "r")
    with pytest.raises(ModelFileError, match="holds a RecurrentNetwork: read it with "
                                             "RecurrentNetwork.load"):
        Network.load(tmp_path / "r")


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
    with pytest.raises(ModelFileError, match="NaN or Inf .*nothing was written"):
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


def test_float64_values_beyond_float32_do_not_load_onto_float32(tmp_path):
    from conftest import get_device

    net = make(get_device("float64"))
    params = net.get_parameters()
    params[0]["bias"][0] = 1e300
    net.set_parameters(params)
    net.save(tmp_path / "m")
    with pytest.raises(ModelFileError, match="does not fit this float32 device.*finite"):
        Network.load(tmp_path / "m", device=get_device("float32"))


def test_killed_saves_leave_nothing_behind_for_long(device64, tmp_path):
    """A save removes the temporary files a killed save of the same target left (they are
    named for their target), and never touches another target's."""
    path = tmp_path / "net.gnpy"
    prefix = model_file._temp_prefix(path)
    (tmp_path / f"{prefix}abandoned").write_bytes(b"x" * 100)
    other = tmp_path / (model_file._temp_prefix(tmp_path / "other") + "abandoned")
    other.write_bytes(b"y")
    make(device64).save(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, other.name])


def test_long_names_and_file_modes(device64, tmp_path):
    long = tmp_path / ("n" * 255)
    make(device64).save(long)
    assert Network.load(long).shapes == make(device64).shapes
    old = os.umask(0o022)
    try:
        fresh = tmp_path / "fresh"
        make(device64).save(fresh)
        assert fresh.stat().st_mode & 0o777 == 0o644
        fresh.chmod(0o640)
        make(device64).save(fresh)
        assert fresh.stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(old)


def test_hostile_inputs_are_model_file_errors(device64, tmp_path):
    path, blob = saved(device64, tmp_path)
    deep = b"[" * 100_000 + b"]" * 100_000
    path.write_bytes(blob[:8] + struct.pack("<Q", len(deep)) + deep + blob[-4:])
    with pytest.raises(ModelFileError, match="corrupted header"):
        Network.load(path)
    with pytest.raises(ModelFileError, match="not a grenade_py model file"):
        Network.load("/dev/zero")  # reads 16 bytes, not forever
    path.write_bytes(blob[:8] + struct.pack("<Q", 2**62) + blob[16:])
    with pytest.raises(ModelFileError, match="claims a"):
        Network.load(path)
    with pytest.raises(TypeError, match="like must be a Network"):
        Network.load(path, like="ff")


def test_a_header_claiming_more_data_than_the_file_holds(tmp_path):
    """A header whose arrays claim 2^42 bytes is refused from the file's size, before the read
    would allocate what it claims (it raised MemoryError)."""
    head = json.dumps({"precision": "float64", "arrays": [{"shape": [1 << 39], "offset": 0}],
                       "data_bytes": 1 << 42}).encode()
    body = MAGIC + bytes([2]) + struct.pack("<Q", len(head)) + head + b"\0" * 64
    path = tmp_path / "claims.gnpy"
    path.write_bytes(body + struct.pack("<I", zlib.crc32(body)))
    with pytest.raises(ModelFileError, match="truncated: 68 of 4398046511108 bytes"):
        Network.load(path)


def test_a_bad_nested_input_is_a_model_file_error(device64, tmp_path):
    """A CRC-valid file whose nested network has no valid input shape (it raised ValueError)."""
    inner = Network([FullyConnected(2, 2)], input=D1(2), device=device64)
    path = tmp_path / "nested.gnpy"
    Network([inner, Tanh()], input=D1(2), device=device64).save(path)
    header, arrays = model_file.read(path)
    header["network"]["layers"][0]["input"] = "D9 9"
    model_file.write(path, header, arrays)
    with pytest.raises(ModelFileError, match="corrupted header .*network.layers\\[0\\] "
                                             "\\(Network\\): needs an \"input\" shape"):
        Network.load(path)


def test_an_unknown_optimizer_name_is_a_model_file_error(device64, tmp_path):
    """A CRC-valid file naming an optimiser grenade_py has not: refused when read (it loaded,
    and the network claimed an optimiser state no rule can use)."""
    path = tmp_path / "opt.gnpy"
    Network([FullyConnected(2, 2)], input=D1(2), device=device64).save(path)
    header, arrays = model_file.read(path)
    model_file.write(path, header | {"optimizer": "rmsprop"}, arrays)
    with pytest.raises(ModelFileError, match="corrupted header \\(optimizer 'rmsprop' is none "
                                             "of \\['adam', 'adamw', 'sgd'\\]\\)"):
        Network.load(path)
