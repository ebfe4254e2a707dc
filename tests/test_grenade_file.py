"""Grenade's own model files: a file made byte for byte to cereal's encoding loads, and grenade_py
writes the same bytes."""
from __future__ import annotations

import struct
import warnings

import numpy as np
import pytest
from conftest import get_device

from grenade_py import D1, FullyConnected, ModelFileError, Network, run_net
from grenade_py.feedforward import feedforward_network
from grenade_py.grenade_file import load_grenade, save_grenade
from grenade_py.mnist import mnist_network


def cereal(*arrays):
    """cereal's putListOf put for each array: a big-endian Word64 count, then big-endian
    doubles in row-major order."""
    return b"".join(struct.pack(">Q", a.size) + np.asarray(a, ">f8").tobytes() for a in arrays)


def test_feedforward_file_round_trips_byte_for_byte(device64, tmp_path):
    rng = np.random.default_rng(1)
    shapes = [(40, 2), (10, 40), (1, 10)]  # FullyConnected weights (o, i); bias (o,)
    weights = [rng.normal(size=s) for s in shapes]
    biases = [rng.normal(size=s[0]) for s in shapes]
    blob = cereal(*(a for b, w in zip(biases, weights, strict=True) for a in (b, w)))
    path = tmp_path / "feedforward.grenade"
    path.write_bytes(blob)
    like = feedforward_network(device64, seed=9)
    net = load_grenade(path, like=like)
    for index, layer in zip((0, 2, 4), range(3), strict=True):
        np.testing.assert_array_equal(net.get_parameters()[index]["weights"], weights[layer])
        np.testing.assert_array_equal(net.get_parameters()[index]["bias"], biases[layer])
    assert all(np.all(m == 0) for p in net.get_momentum() for m in p.values())
    save_grenade(net, tmp_path / "again")
    assert (tmp_path / "again").read_bytes() == blob


def test_lenet_file_keeps_grenade_layouts(device64, tmp_path):
    net = mnist_network("lenet", device64, seed=2)
    save_grenade(net, tmp_path / "lenet")
    blob = (tmp_path / "lenet").read_bytes()
    params = net.get_parameters()
    expected = cereal(params[0]["kernel"], params[3]["kernel"], params[7]["bias"],
                      params[7]["weights"], params[9]["bias"], params[9]["weights"])
    assert blob == expected
    loaded = load_grenade(tmp_path / "lenet", like=mnist_network("lenet", device64, seed=3))
    x = np.random.default_rng(4).uniform(size=(2, 28, 28))
    np.testing.assert_array_equal(run_net(loaded, x), run_net(net, x))


def test_wrong_files_are_model_file_errors(device64, tmp_path):
    like = Network([FullyConnected(2, 3)], input=D1(2), device=device64)
    path = tmp_path / "f"
    good = cereal(np.zeros(3), np.zeros((3, 2)))
    for blob, message in ((good[:-8], "it has 80 bytes, where that network's parameters take 88"),
                          (good + b"\0", "it has 89 bytes"),
                          (cereal(np.zeros(4), np.zeros(5)), "should hold 3 values")):
        path.write_bytes(blob)
        with pytest.raises(ModelFileError, match=message):
            load_grenade(path, like=like)


def test_values_beyond_float32_are_refused_without_a_warning(tmp_path):
    """A double too large for float32 is a ModelFileError, and numpy's overflow warning does
    not leak to the user (it did, beside the error)."""
    like = Network([FullyConnected(2, 3)], input=D1(2), device=get_device("float32"))
    path = tmp_path / "f"
    path.write_bytes(cereal(np.zeros(3), np.full((3, 2), 1e300)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ModelFileError, match=r"FullyConnected 2 3 is not finite in float32"):
            load_grenade(path, like=like)


def test_a_file_as_grenade_writes_it(device64, tmp_path):
    """Bytes written out by hand from Grenade's source, not by any writer of ours: a
    FullyConnected 2 1 (bias 0.5, weights [1, -2]) is `putListOf put` of the bias, then of the
    row-major weights; cereal's putListOf is a big-endian Word64 count then each element, and
    its Double is IEEE 754 big-endian (cereal >= 0.5)."""
    path = tmp_path / "grenade.bin"
    path.write_bytes(bytes.fromhex("0000000000000001" "3fe0000000000000"
                                   "0000000000000002" "3ff0000000000000" "c000000000000000"))
    net = load_grenade(path, like=Network([FullyConnected(2, 1)], input=D1(2), device=device64))
    assert net.get_parameters() == [{"weights": pytest.approx(np.array([[1.0, -2.0]])),
                                     "bias": pytest.approx(np.array([0.5]))}]
    assert run_net(net, np.array([3.0, 1.0])) == pytest.approx([1.5])


def grenade_lstm_step(m, cell, x):
    """Grenade's LSTM runRecurrentForwards, written from the Haskell over its eleven separate
    arrays: (next cell, output)."""
    def sigmoid(v):
        return 1 / (1 + np.exp(-v))
    f = sigmoid(m["bf"] + m["wf"] @ x + m["uf"] @ cell)
    i = sigmoid(m["bi"] + m["wi"] @ x + m["ui"] @ cell)
    o = sigmoid(m["bo"] + m["wo"] @ x + m["uo"] @ cell)
    c = f * cell + i * np.tanh(m["bc"] + m["wc"] @ x)
    return c, o * c


def test_a_recurrent_file_as_grenade_writes_it(device64, tmp_path):
    """A Shakespeare-like network with a ConcatRecurrent (ConcatRecLeft), its file made from
    eleven separate arrays per LSTM in the order of Grenade's Serialize (LSTM), the branches a
    then b, then `put bestInput` (every cell's state in order), as shakespeare.hs saves; it
    runs as Grenade's cell computes, and writes back the same bytes. Without the states the file
    loads too, with zero states."""
    from grenade_py import LSTM, ConcatRecurrent, Logit, RecurrentNetwork, run_recurrent

    rng = np.random.default_rng(5)

    def lstm(i, o):
        m = {}
        for gate in "fio":
            m["w" + gate], m["u" + gate], m["b" + gate] = (
                rng.normal(size=(o, i)), rng.normal(size=(o, o)) * 0.5, rng.normal(size=o))
        m["wc"], m["bc"] = rng.normal(size=(o, i)), rng.normal(size=o)
        return m

    first, second = lstm(3, 4), lstm(4, 2)
    fc_b, fc_w = rng.normal(size=3), rng.normal(size=(3, 4))
    out_b, out_w = rng.normal(size=3), rng.normal(size=(3, 5))
    states = [rng.normal(size=4), rng.normal(size=2)]
    order = ("wf", "uf", "bf", "wi", "ui", "bi", "wo", "uo", "bo", "wc", "bc")
    layers_blob = cereal(*(first[k] for k in order), *(second[k] for k in order),
                         fc_b, fc_w, out_b, out_w)
    like = RecurrentNetwork([LSTM(3, 4), ConcatRecurrent(LSTM(4, 2), FullyConnected(4, 3)),
                             FullyConnected(5, 3), Logit()], input=D1(3), device=device64,
                            seed=1)
    (tmp_path / "rnn").write_bytes(layers_blob + cereal(*states))
    (tmp_path / "bare").write_bytes(layers_blob)
    net = load_grenade(tmp_path / "rnn", like=like)
    xs = rng.normal(size=(6, 3))
    cells, want = list(states), []
    for x in xs:
        cells[0], h = grenade_lstm_step(first, cells[0], x)
        cells[1], ha = grenade_lstm_step(second, cells[1], h)
        joined = np.concatenate([ha, fc_b + fc_w @ h])
        want.append(1 / (1 + np.exp(-(out_b + out_w @ joined))))
    ys, after = run_recurrent(net, xs)
    np.testing.assert_allclose(ys, want, rtol=1e-12, atol=1e-14)
    for got, cell in zip(after.get(), cells, strict=True):
        np.testing.assert_allclose(got[0], cell, rtol=1e-12)
    save_grenade(net, tmp_path / "again")
    assert (tmp_path / "again").read_bytes() == layers_blob + cereal(*states)
    bare = load_grenade(tmp_path / "bare", like=like)
    assert all(np.all(p[k] == 0) for p in bare.get_parameters() for k in p if "state" in k)
    np.testing.assert_array_equal(bare.get_parameters()[2]["weights"], out_w)


def test_layers_without_a_grenade_form_are_refused(device64, tmp_path):
    from grenade_py import BasicRecurrent, RecurrentNetwork

    (tmp_path / "f").write_bytes(b"")
    like = RecurrentNetwork([BasicRecurrent(2, 2)], input=D1(2), device=device64)
    with pytest.raises(ModelFileError, match="BasicRecurrent 2 2 has no Grenade file form"):
        load_grenade(tmp_path / "f", like=like)
    with pytest.raises(TypeError, match="like must be a Network or RecurrentNetwork, got str"):
        load_grenade(tmp_path / "f", like="net")


def test_files_are_sized_before_they_are_read(device64, tmp_path):
    """A sparse 4 GiB file and /dev/zero are refused without being read (they took 12.6 s and
    4.1 GB, or raised MemoryError)."""
    like = Network([FullyConnected(2, 3)], input=D1(2), device=device64)
    sparse = tmp_path / "sparse"
    with open(sparse, "wb") as f:
        f.truncate(4 << 30)
    with pytest.raises(ModelFileError, match="it has 4294967296 bytes"):
        load_grenade(sparse, like=like)
    with pytest.raises(ModelFileError, match="is not a regular file"):
        load_grenade("/dev/zero", like=like)
