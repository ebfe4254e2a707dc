"""Branches and nested networks: Trivial, Merge, Concat, a Network as a layer; shapes checked
through every branch; per-batch buffers and the training flag of the layer contract."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import numeric_gradients

from grenade_py import (
    D1,
    D2,
    D3,
    BatchNorm,
    Concat,
    FullyConnected,
    Gelu,
    LeakyRelu,
    LeakyTanh,
    LearningParameters,
    Logit,
    Merge,
    Network,
    Relu,
    ShapeError,
    Sinusoid,
    Softmax,
    Tanh,
    Trivial,
    back_propagate,
    evaluate,
    execution,
    fit,
    run_net,
    train,
)
from grenade_py.numpy_reference import NumpyNetwork

LP = LearningParameters(0.02, 0.9, 0.001)


def reference(net):
    return NumpyNetwork([layer.spec() for layer in net.layers], net.get_parameters())


def test_shapes_of_each_join(device):
    def out(layer, shape):
        return Network([layer], input=shape, device=device).output_shape

    assert out(Concat(FullyConnected(3, 2), FullyConnected(3, 5)), D1(3)) == D1(7)
    assert out(Concat(FullyConnected(4, 4), Tanh(), stacked=True), D1(4)) == D2(2, 4)
    assert out(Concat(Tanh(), [Relu(), Logit()]), D3(2, 5, 3)) == D3(2, 5, 6)
    assert out(Merge(Tanh(), Trivial()), D2(3, 4)) == D2(3, 4)


@pytest.mark.parametrize("layers, message", [
    ([FullyConnected(2, 12), Tanh(), Relu(), Concat([FullyConnected(12, 4)],
                                                    [Tanh(), FullyConnected(10, 4)])],
     r"^layer 3 \(Concat\) branch b, layer 1 \(FullyConnected 10 4\) takes D1 10, but its "
     r"input is D1 12$"),
    ([FullyConnected(2, 3), Merge(FullyConnected(3, 4), FullyConnected(3, 5))],
     r"^layer 1 \(Merge\) sums outputs of one shape, but branch a gives D1 4 and branch b D1 5$"),
    ([FullyConnected(2, 3), Concat(FullyConnected(3, 4), Tanh(), stacked=True)],
     r"^layer 1 \(Concat\) joins two D1 outputs of one size, but branch a gives D1 4"),
    ([Concat(Tanh(), FullyConnected(2, 2))],
     r"^layer 0 \(Concat\) branch b \(FullyConnected 2 2\) takes D1 2, but its input is D2"),
    ([Merge(Network([FullyConnected(3, 1)], input=D1(3)), Trivial())],
     r"^layer 0 \(Merge\) branch a \(Network\) takes D1 3, but its input is D1 2$"),
])
def test_shape_errors_name_the_path(device, layers, message):
    shape = D2(2, 2) if isinstance(layers[0], Concat) else D1(2)
    with pytest.raises(ShapeError, match=message):
        Network(layers, input=shape, device=device)


def test_nested_network_keeps_its_parameters_and_belongs_to_the_outer(device64, rng):
    inner = Network([FullyConnected(3, 4), Tanh()], input=D1(3), device=device64, seed=1)
    before = inner.get_parameters()[0]
    outer = Network([inner, FullyConnected(4, 2)], input=D1(3), device=device64, seed=2)
    np.testing.assert_array_equal(outer.get_parameters()[0]["0.weights"], before["weights"])
    x = rng.normal(size=(5, 3))
    np.testing.assert_allclose(run_net(outer, x), reference(outer).forward(x)[-1], rtol=1e-12)
    with pytest.raises(ValueError, match="part of another network"):
        run_net(inner, x)
    with pytest.raises(ValueError, match="already belongs"):
        Network([inner], input=D1(3), device=device64)
    # The nested network's parameters are views of the outer's: a step of the outer moves them.
    train(outer, LearningParameters(0.1, 0.9, 0.0), x, rng.normal(size=(5, 2)))
    moved = outer.get_parameters()[0]
    assert not np.array_equal(moved["0.weights"], before["weights"])
    for name, value in inner.get_parameters()[0].items():
        np.testing.assert_array_equal(value, moved[f"0.{name}"])


def test_a_layer_cannot_appear_twice(device):
    tanh = Tanh()
    with pytest.raises(ValueError, match="appears twice"):
        Network([tanh, Merge(tanh, Relu())], input=D1(2), device=device)
    # nothing was placed: the layer can still be used
    Network([tanh], input=D1(2), device=device)
    with pytest.raises(ValueError, match="^the two branches must be different layers$"):
        Merge(tanh, tanh)
    with pytest.raises(TypeError, match="^a branch is a layer, a list of layers or a Network, "
                       "got 'tanh'$"):
        Concat("tanh", Relu())
    with pytest.raises(TypeError, match="^stacked must be True or False, got 'yes'$"):
        Concat(Tanh(), Relu(), stacked="yes")


#: The activations random networks draw from (the fork's with their arguments).
ACTIVATIONS = [Tanh, Relu, Logit, Trivial, Sinusoid, Gelu, lambda: Gelu(approximate=True),
               lambda: LeakyRelu(0.1), lambda: LeakyTanh(0.8)]


def random_layers(rng, shape, depth=0):
    """A random valid stack on `shape`: activations anywhere, FullyConnected on D1, BatchNorm on
    D3, Merge and Concat of random branches (nested networks among them), up to two levels
    deep."""
    layers = []
    for _ in range(rng.integers(1, 4)):
        kind = rng.integers(6) if depth < 2 else rng.integers(2)
        if kind in (1, 2) and isinstance(shape, D3):
            layers.append(BatchNorm(shape.channels))
        elif kind == 0 or (kind == 1 and not isinstance(shape, D1)):
            layers.append(ACTIVATIONS[rng.integers(len(ACTIVATIONS))]())
        elif kind == 1:
            layers.append(FullyConnected(shape.n, int(rng.choice([1, 3, 5]))))
        elif kind in (2, 3) and isinstance(shape, D1):
            width = int(rng.choice([1, 2, 4]))
            a = random_layers(rng, shape, depth + 1)
            b = random_layers(rng, shape, depth + 1)
            a_out, b_out = _out(a, shape), _out(b, shape)
            a.append(FullyConnected(a_out.n, width))
            b.append(FullyConnected(b_out.n, width))
            if kind == 2:
                layers.append(Merge(a, b))
            else:
                layers.append(Concat(a, Network(b, input=shape),
                                     stacked=depth == 0 and bool(rng.integers(2))))
        else:
            a = ACTIVATIONS[rng.integers(len(ACTIVATIONS))]()
            b = [Tanh(), Relu()] if rng.integers(2) else \
                BatchNorm(shape.channels) if isinstance(shape, D3) else Trivial()
            join = Concat if isinstance(shape, (D1, D3)) and rng.integers(2) else Merge
            layers.append(join(a, b))
        shape = _out([layers[-1]], shape)
        if isinstance(shape, D2) and depth == 0:
            break
    return layers


def _out(layers, shape):
    from grenade_py.layers import Series

    return Series(layers).out_shape(shape)


SHAPES = [D1(3), D1(1), D2(2, 3), D3(2, 3, 2)]


def parameters_match(net, ref):
    """The network's parameters equal the numpy transcription's (after the same training)."""
    for got, want in zip(net.get_parameters(), ref.parameters, strict=True):
        for name in want:
            np.testing.assert_allclose(got[name], want[name], rtol=1e-10, atol=1e-12)


def outputs_and_gradients_match(net, ref, x, y):
    """run_net and back_propagate on (x, y) equal the numpy transcription `ref`; the gradients
    equal finite differences too (but through a BatchNorm, whose training pass normalises by
    the batch's statistics where run_net uses the running ones)."""
    np.testing.assert_allclose(run_net(net, x), ref.forward(x)[-1], rtol=1e-11, atol=1e-12)
    normalised = any(isinstance(layer, BatchNorm) for _, layer, _ in net.nodes(net.input_shape))
    numeric = None if normalised else numeric_gradients(
        net, lambda n: 0.5 * np.sum((run_net(n, x) - y) ** 2) / len(x))
    for index, (got, want) in enumerate(zip(back_propagate(net, x, y), ref.gradients(x, y),
                                            strict=True)):
        assert set(got) == set(want)
        for name in want:
            np.testing.assert_allclose(got[name], want[name], rtol=1e-10, atol=1e-12)
            if numeric is not None:
                np.testing.assert_allclose(got[name], numeric[index][name], rtol=1e-5, atol=1e-7)


def matches_numpy_and_trains(net, rng, rows):
    """`outputs_and_gradients_match` on `rows` random samples and targets, then a batched
    train step of the network and of its numpy transcription; returns (transcription, x, y)."""
    ref = reference(net)
    x = rng.normal(size=(rows, *net.input_shape.dims))
    y = rng.normal(size=(rows, *net.output_shape.dims))
    outputs_and_gradients_match(net, ref, x, y)
    train(net, LP, x, y)
    ref.train(x, y, LP)
    return ref, x, y


@pytest.mark.parametrize("seed", range(16))
def test_random_networks_against_numpy(device64, seed):
    """run_net, back_propagate, a batched train step and per-example training of random
    networks with branches equal the numpy transcription; the gradients equal finite
    differences (but through a BatchNorm, whose training pass normalises by the batch's
    statistics where run_net uses the running ones: tests/test_batch_norm.py checks those
    against finite differences of the training pass); after training, run_net still equals
    the transcription (a BatchNorm's running statistics moved alike)."""
    rng = np.random.default_rng(seed)
    shape = SHAPES[seed % len(SHAPES)]
    net = Network(random_layers(rng, shape), input=shape, device=device64, seed=seed,
                  init="grenade")
    ref, x, y = matches_numpy_and_trains(net, rng, 4)
    train(net, LP, x, y, per_example=True)
    ref.train_per_example(x, y, LP)
    parameters_match(net, ref)
    np.testing.assert_allclose(run_net(net, x), ref.forward(x)[-1], rtol=1e-10, atol=1e-11)


NESTED = {
    # a Trivial beside a Concat, whose branches' outputs are joined straight into the outer rows
    "trivial-nested": (D1(3), lambda: [
        FullyConnected(3, 4), Concat(Trivial(), Concat(FullyConnected(4, 2), [
            Tanh(), FullyConnected(4, 3)])), Tanh(), FullyConnected(9, 2)]),
    # two nested Concats, Trivials on both sides of the inner ones
    "nested-both": (D1(3), lambda: [
        FullyConnected(3, 5), Concat(Concat(Trivial(), FullyConnected(5, 3)),
                                     Concat(Logit(), Trivial())), FullyConnected(18, 2)]),
    # channels, three levels deep, first in the network (no input delta wanted)
    "channels-first": (D3(2, 3, 2), lambda: [
        Concat(Relu(), Concat(BatchNorm(2), Concat(Trivial(), Tanh()))), BatchNorm(8),
        Tanh()]),
    # the same after a layer with parameters: every branch's input delta wanted
    "channels-deep": (D3(2, 3, 2), lambda: [
        BatchNorm(2), Concat(Relu(), Concat(Tanh(), Concat(Trivial(), Logit()))),
        BatchNorm(8)]),
}


@pytest.mark.parametrize("name", NESTED)
def test_nested_concats_join_in_place_and_equal_numpy(device64, name):
    """A Concat whose branch is a Concat (or a Trivial) joins that branch's output straight
    into its rows, and splits its delta straight out of them (no buffers of their own): the
    outputs, gradients and a train step equal the numpy transcription; the gradients finite
    differences too (but through a BatchNorm)."""
    shape, layers = NESTED[name]
    rng = np.random.default_rng(7)
    net = Network(layers(), input=shape, device=device64, seed=2, init="grenade")
    ref, _, _ = matches_numpy_and_trains(net, rng, 3)
    parameters_match(net, ref)
    joins = [(path, layer) for path, layer, _ in net.nodes(shape) if isinstance(layer, Concat)]
    buffers = execution.steps(net, 3).buffers
    for path, layer in joins:
        for key, branch in (("a", layer.a), ("b", layer.b)):
            own = f"{path}.y{key}" in buffers
            assert own == (type(branch) not in (Concat, Trivial)), (path, key)


def test_random_network_through_fit_and_a_model_file(device64, tmp_path):
    rng = np.random.default_rng(99)
    layers = [FullyConnected(3, 4), Concat([Tanh(), FullyConnected(4, 2)],
                                           Network([FullyConnected(4, 3), Relu()], input=D1(4))),
              Merge(Trivial(), [FullyConnected(5, 5), Logit()]), FullyConnected(5, 2), Softmax()]
    net = Network(layers, input=D1(3), device=device64, seed=3)
    x = rng.normal(size=(40, 3))
    y = np.eye(2)[rng.integers(0, 2, 40)]
    ref = reference(net)
    fit(net, LP, x, y, batch_size=16, epochs=2, seed=4, loss="cross_entropy")
    ref.fit(x, y, LP, batch_size=16, epochs=2, seed=4, loss="cross_entropy")
    for got, want in zip(net.get_parameters(), ref.parameters, strict=True):
        for name in want:
            np.testing.assert_allclose(got[name], want[name], rtol=1e-10, atol=1e-12)
    net.save(tmp_path / "m")
    loaded = Network.load(tmp_path / "m", device=device64)
    assert repr(loaded) == repr(net) and loaded.spec() == net.spec()
    np.testing.assert_array_equal(run_net(loaded, x), run_net(net, x))
    fit(net, LP, x, y, batch_size=16, epochs=1, seed=5, loss="cross_entropy")
    fit(loaded, LP, x, y, batch_size=16, epochs=1, seed=5, loss="cross_entropy")
    np.testing.assert_array_equal(run_net(loaded, x), run_net(net, x))


@pytest.mark.parametrize("join", ["concat", "merge", "first"])
def test_per_example_training_with_branches_in_the_fused_loop(device64, monkeypatch, join):
    """Concat and Merge join the fused loop (their branches' ends point into the join's
    boundaries; the input deltas add up), one first in the network (no input delta), and a
    nested plain network unrolled: equal to the numpy transcription and to layer by layer."""
    rng = np.random.default_rng(7)

    def make(seed):
        inner = Network([FullyConnected(4, 3), Tanh()], input=D1(4), device=device64, seed=seed)
        last = {"concat": Concat(FullyConnected(3, 1), Logit()),
                "merge": Merge(Trivial(), [FullyConnected(3, 3), Relu()])}
        if join == "first":
            return Network([Concat(FullyConnected(2, 2), [Logit(), FullyConnected(2, 3)]),
                            FullyConnected(5, 3)], input=D1(2), device=device64, seed=seed)
        return Network([FullyConnected(2, 4), inner, last[join]], input=D1(2), device=device64,
                       seed=seed)

    branched, plain = make(1), make(1)
    x = rng.normal(size=(300, 2))
    y = rng.uniform(size=(300, *branched.output_shape.dims))
    assert execution.fused(branched) is not None
    ref = reference(branched)
    train(branched, LP, x, y, per_example=True)
    ref.train_per_example(x, y, LP)
    for got, want in zip(branched.get_parameters(), ref.parameters, strict=True):
        for name in want:
            np.testing.assert_allclose(got[name], want[name], rtol=1e-10, atol=1e-12)
    monkeypatch.setattr("grenade_py.execution.fused", lambda *args: None)
    train(plain, LP, x, y, per_example=True)
    for a, b in zip(branched.get_parameters(), plain.get_parameters(), strict=True):
        for name in a:
            np.testing.assert_allclose(a[name], b[name], rtol=1e-12, atol=1e-14)


class Recorder(Trivial):
    """The identity, recording the training flag and the per-batch buffer it was given."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def batch_buffers(self, n):
        return {"scratch": (n, 3)}

    def forward(self, n, x, y, buffers, training):
        self.seen.append((training, buffers["scratch"].shape))
        return super().forward(n, x, y, buffers, training)


def test_per_batch_buffers_and_the_training_flag(device):
    recorder = Recorder()
    net = Network([FullyConnected(2, 2), Merge(recorder, Tanh())], input=D1(2), device=device)
    x, y = np.zeros((5, 2)), np.zeros((5, 2))
    run_net(net, x)
    train(net, LP, x, y)
    train(net, LP, x, y)  # launches and buffers are built once per batch size
    fit(net, LP, x, y, batch_size=5)
    evaluate(net, x, y)
    assert recorder.seen == [(False, (5, 3)), (True, (5, 3))]
    assert execution.steps(net, 5).buffers["1.a.scratch"].shape == (5, 3)


def test_d3_is_channel_major_through_run_net_train_fit_and_files(device64, tmp_path, rng):
    """A batch of D3 rows cols channels is (N, channels, rows, cols); Concat joins channels."""
    net = Network([Concat(Tanh(), [Relu(), Logit()]), Merge(Trivial(), Tanh())],
                  input=D3(2, 3, 1), device=device64)
    assert net.output_shape == D3(2, 3, 2) and net.output_shape.dims == (2, 2, 3)
    x = rng.normal(size=(5, 1, 2, 3))
    joined = np.concatenate([np.tanh(x), 1 / (1 + np.exp(-np.maximum(x, 0)))], axis=1)
    np.testing.assert_allclose(run_net(net, x), joined + np.tanh(joined), rtol=1e-12)
    y = rng.normal(size=(5, 2, 2, 3))
    train(net, LP, x, y)
    train(net, LP, x, y, per_example=True)
    (record,) = fit(net, LP, x, y, batch_size=2)
    assert record["loss"] == pytest.approx(evaluate(net, x, y)["loss"], rel=1e-12)
    net.save(tmp_path / "d3")
    loaded = Network.load(tmp_path / "d3", device=device64)
    assert loaded.shapes == net.shapes
    np.testing.assert_array_equal(run_net(loaded, x), run_net(net, x))
    with pytest.raises(ValueError, match=r"shape \(5, 2, 3, 1\), but the network takes D3 2 3 1"):
        run_net(net, x.reshape(5, 2, 3, 1))
