"""Building networks: shape checks, the shape list, repr, parameters as numpy."""
from __future__ import annotations

import json

import numpy as np
import pyopencl as cl
import pytest

from grenade_py import (
    D1,
    D2,
    D3,
    FullyConnected,
    Logit,
    Network,
    Pad,
    Relu,
    Reshape,
    ShapeError,
    Tanh,
    run_net,
)


def test_shapes_and_repr(device):
    net = Network([FullyConnected(2, 4), Tanh(), FullyConnected(4, 1), Logit()], input=D1(2),
                  device=device)
    assert net.shapes == [D1(2), D1(4), D1(4), D1(1), D1(1)]
    assert repr(net) == ("Network '[FullyConnected 2 4, Tanh, FullyConnected 4 1, Logit] "
                         "'[D1 2, D1 4, D1 4, D1 1, D1 1]")


def test_shape_error_names_layer_and_both_shapes(device):
    with pytest.raises(ShapeError) as e:
        Network([FullyConnected(2, 40), Tanh(), FullyConnected(10, 1)], input=D1(2),
                device=device)
    message = str(e.value)
    assert "layer 2" in message and "FullyConnected 10 1" in message
    assert "D1 10" in message and "D1 40" in message


def test_common_mistakes_say_how_to_fix_them(device):
    """A convolution's D3 (or a D2 input) into a FullyConnected of as many values: a Reshape()
    there builds (and the message says so); a layer class for a layer; one layer for a list."""
    from grenade_py import Convolution, Softmax
    conv = [Convolution(1, 4, 5, 5, 1, 1), Relu()]
    with pytest.raises(ShapeError, match=r"layer 2 \(FullyConnected 2304 10\) takes D1 2304, "
                       r"but its input is D3 24 24 4: put a Reshape\(\) before it to give it "
                       r"the same 2304 values as D1 2304$"):
        Network([*conv, FullyConnected(2304, 10)], input=D3(28, 28, 1), device=device)
    Network([*conv, Reshape(), FullyConnected(2304, 10)], input=D3(28, 28, 1), device=device)
    with pytest.raises(ShapeError, match=r"its input is D2 28 28: put a Reshape\(\) before it"):
        Network([FullyConnected(784, 10)], input=D2(28, 28), device=device)
    with pytest.raises(ShapeError, match=r"its input is D1 40$"):  # not as many values
        Network([FullyConnected(2, 40), FullyConnected(10, 1)], input=D1(2), device=device)
    with pytest.raises(TypeError, match=r"layer 1 is the class Softmax, not a layer: write "
                       r"Softmax\(...\)"):
        Network([FullyConnected(3, 2), Softmax], input=D1(3), device=device)
    with pytest.raises(TypeError, match=r"layers must be a list of layers, got one "
                       r"\(FullyConnected 3 2\): pass \[layer, ...\]"):
        Network(FullyConnected(3, 2), input=D1(3), device=device)
    with pytest.raises(ShapeError, match="^a network needs at least one layer$"):
        Network([], input=D1(3), device=device)
    with pytest.raises(TypeError, match=r"^layer 1 is 'relu', not a grenade_py layer$"):
        Network([FullyConnected(3, 2), "relu"], input=D1(3), device=device)


def test_a_bad_size_is_named_in_the_constructors_order():
    # D3's dims are (channels, rows, cols): the error gives what the caller wrote
    with pytest.raises(ValueError, match=r"D3 sizes \(rows, cols, channels\) must be positive "
                                         r"ints, got \(1, -1, 2\)"):
        D3(1, -1, 2)
    with pytest.raises(ValueError, match=r"D1 sizes \(n\) .* got \(True,\)"):
        D1(True)


def test_numpy_ints_are_sizes_as_layers_take_them(device):
    """Sizes computed with numpy (np.prod, a shape's entries as np.int64) build shapes, Pad and
    an export as the layers' own arguments do (D1, D2, D3 and Pad refused them), kept as
    Python ints."""
    shape = D3(np.int64(4), np.int32(4), np.int64(1))
    assert shape == D3(4, 4, 1) and all(type(d) is int for d in shape.dims)
    net = Network([Pad(np.int64(1), 0, 0, np.int64(1)), Reshape(D1(np.prod([5, 5])))],
                  input=shape, device=device)
    assert json.loads(json.dumps(net.spec())) == net.spec()
    assert net.shapes[-1] == D1(25) and repr(net.layers[0]) == "Pad 1 0 0 1"


def test_fully_connected_rejects_2d_input(device):
    with pytest.raises(ShapeError, match="layer 0 .*D1 6.*D2 2 3"):
        Network([FullyConnected(6, 1)], input=D2(2, 3), device=device)


def test_shapes_from_text():
    """Model files and specs write shapes as their repr; anything else is refused."""
    from grenade_py.shapes import parse_shape

    assert parse_shape("D3 28 28 1") == D3(28, 28, 1) and parse_shape(" D1  7 ") == D1(7)
    for text, message in (("D2 3", "wrong number of sizes"), ("D4 1", "expected e.g."),
                          ("D1 -1", "expected e.g."), (None, "expected e.g.")):
        with pytest.raises(ValueError, match=f"^not a shape: {text!r}.*{message}"):
            parse_shape(text)  # type: ignore[arg-type]


def test_pad_and_crop_take_sizes_and_planes(device):
    from grenade_py import Crop

    for layer in (Pad, Crop):
        with pytest.raises(ValueError, match=f"^{layer.__name__} top must be an int >= 0, got "
                           "-1$"):
            layer(0, -1, 0, 0)
        with pytest.raises(ValueError, match="right must be an int >= 0, got 1.5$"):
            layer(0, 0, 1.5, 0)
        with pytest.raises(ShapeError, match=r"^layer 0 \((Pad|Crop) 1 1 1 1\) takes D2 or D3, "
                           "but its input is D1 4$"):
            Network([layer(1, 1, 1, 1)], input=D1(4), device=device)


def test_activations_keep_any_shape(device, rng):
    net = Network([Relu()], input=D2(2, 3), device=device)
    x = rng.normal(size=(4, 2, 3))
    np.testing.assert_allclose(run_net(net, x), np.maximum(x, 0), rtol=1e-6)


def test_layer_belongs_to_one_network(device):
    layer = FullyConnected(2, 2)
    Network([layer], input=D1(2), device=device)
    with pytest.raises(ValueError, match="already belongs"):
        Network([layer], input=D1(2), device=device)


def test_parameters_round_trip_and_validate(device):
    net = Network([FullyConnected(2, 3), Tanh()], input=D1(2), device=device, seed=5)
    params = net.get_parameters()
    assert params[0]["weights"].shape == (3, 2) and params[0]["bias"].shape == (3,)
    assert params[1] == {}
    params[0]["weights"] = np.arange(6.0).reshape(3, 2)
    net.set_parameters(params)
    np.testing.assert_array_equal(net.get_parameters()[0]["weights"], params[0]["weights"])
    bad = [{"weights": np.zeros((2, 3)), "bias": np.zeros(3)}, {}]
    with pytest.raises(ValueError, match=r"weights must have shape \(3, 2\)"):
        net.set_parameters(bad)
    nan = [{"weights": np.full((3, 2), np.nan), "bias": np.zeros(3)}, {}]
    with pytest.raises(ValueError, match="finite"):
        net.set_parameters(nan)
    with pytest.raises(ValueError, match="^expected momentum for 2 layers, got 1$"):
        net.set_momentum(params[:1])
    with pytest.raises(ValueError, match=r"^layer 0 \(FullyConnected 2 3\) has second "
                       r"\['bias', 'weights'\], got \['weights'\]$"):
        net.set_second([{"weights": params[0]["weights"]}, {}])
    # a failed set changes nothing
    np.testing.assert_array_equal(net.get_parameters()[0]["weights"], params[0]["weights"])
    assert not net.get_momentum()[0]["weights"].any() and not net.get_second()[0]["bias"].any()


def test_seeded_initialisation(device):
    def weights(seed, init="scaled"):
        net = Network([FullyConnected(100, 3)], input=D1(100), device=device, seed=seed,
                      init=init)
        return net.get_parameters()[0]["weights"]

    np.testing.assert_array_equal(weights(1), weights(1))
    assert not np.array_equal(weights(1), weights(2))
    assert np.abs(weights(1)).max() <= 0.1  # 1/sqrt(100)
    grenade = weights(1, "grenade")
    assert 0.9 < np.abs(grenade).max() <= 1.0
    with pytest.raises(ValueError, match="init"):
        weights(1, "glorot")
    np.testing.assert_array_equal(weights(np.int64(1)), weights(1))
    np.testing.assert_array_equal(weights(np.random.SeedSequence(1)), weights(1))
    for bad in (-1, 1.5, "1", True):
        with pytest.raises(ValueError, match=rf"seed must be an int >= 0, got {bad!r}"):
            weights(bad)


def test_a_failed_build_places_nothing(device):
    layer = FullyConnected(2, 2)
    with pytest.raises(ValueError, match="init must be one of"):
        Network([layer], input=D1(2), device=device, init="glorot")
    with pytest.raises(ShapeError):
        Network([layer, FullyConnected(3, 1)], input=D1(2), device=device)
    Network([layer], input=D1(2), device=device)  # the same layer builds afterwards


def test_bad_init_is_refused_without_parameters_too(device):
    with pytest.raises(ValueError, match="init must be one of"):
        Network([Tanh()], input=D1(2), device=device, init="glorot")


def test_input_and_device_arguments(device):
    with pytest.raises(TypeError, match="input must be a shape"):
        Network([Tanh()], input="D1 2", device=device)
    with pytest.raises(TypeError, match="device must be a Device"):
        Network([Tanh()], input=D1(2), device=3)
    assert Network([Tanh()], input=D1(2), device="0:0").device.cl_device is not None


def test_parameters_live_in_one_flat_buffer(device):
    """Every parameter is a view of the network's flat buffer, so one launch updates all."""
    net = Network([FullyConnected(3, 5), Tanh(), FullyConnected(5, 2)], input=D1(3),
                  device=device, seed=1)
    flat = net.flat["parameters"].get()
    for layer in net.layers:
        for view in layer.parameters.values():
            offset = view.base_data.get_info(cl.mem_info.OFFSET)
            start = offset // flat.itemsize
            np.testing.assert_array_equal(flat[start:start + view.size], view.get().ravel())
    assert flat.size >= 3 * 5 + 5 + 5 * 2 + 2


@pytest.mark.parametrize("init", ["xavier", "he"])
def test_the_forks_initialisers(device64, init):
    """The fork's Xavier, U(-1, 1) sqrt(6 / (fan_in + fan_out)), and HeEtAl, N(0, 1)
    sqrt(2 / fan_in), for weights and biases alike: bounds, spread and mean of 120k draws."""
    net = Network([FullyConnected(400, 300), Relu()], input=D1(400), device=device64, seed=1,
                  init=init)
    values = np.concatenate([v.ravel() for v in net.get_parameters()[0].values()])
    if init == "xavier":
        bound = np.sqrt(6) / np.sqrt(400 + 300)
        assert np.abs(values).max() <= bound and np.abs(values).max() > 0.99 * bound
        expected_std = bound / np.sqrt(3)  # a uniform's
    else:
        expected_std = np.sqrt(2 / 400)
        assert np.abs(values).max() > 3 * expected_std  # a normal's tails, not a uniform's
    assert abs(values.std() / expected_std - 1) < 0.02 and abs(values.mean()) < 0.01 * \
        expected_std * 10
    other = Network([FullyConnected(400, 300), Relu()], input=D1(400), device=device64, seed=1,
                    init=init)
    np.testing.assert_array_equal(other.get_parameters()[0]["weights"],
                                  net.get_parameters()[0]["weights"])  # seeded


def test_a_layer_can_choose_its_own_initialiser(device64, tmp_path):
    """init= on a layer overrides the network's for that layer alone: each layer draws what
    it would have drawn in a network of that init, seeded alike (grenade and scaled consume
    the generator alike); the choice is in the spec and survives a model file."""
    from grenade_py import D3, LSTM, Convolution, RecurrentNetwork, Reshape

    def build(first: str | None, last: str | None, init: str = "scaled") -> Network:
        return Network([FullyConnected(3, 8, init=first), Tanh(), Reshape(D3(2, 2, 2)),
                        Convolution(2, 3, 2, 2, 1, 1, init=last)], input=D1(3),
                       device=device64, seed=4, init=init)

    mixed = build("grenade", None)
    grenade, scaled = build(None, None, "grenade"), build(None, None, "scaled")
    for name in ("weights", "bias"):
        np.testing.assert_array_equal(mixed.get_parameters()[0][name],
                                      grenade.get_parameters()[0][name])
    np.testing.assert_array_equal(mixed.get_parameters()[3]["kernel"],
                                  scaled.get_parameters()[3]["kernel"])
    assert np.abs(grenade.get_parameters()[0]["weights"]).max() > 0.6  # U(-1, 1), not scaled
    overridden = build(None, "grenade", init="grenade")
    np.testing.assert_array_equal(overridden.get_parameters()[3]["kernel"],
                                  grenade.get_parameters()[3]["kernel"])
    assert mixed.spec()["layers"][0]["init"] == "grenade" and "init" not in \
        mixed.spec()["layers"][3]
    rebuilt = Network.from_spec(json.loads(json.dumps(mixed.spec())), device64, seed=4)
    np.testing.assert_array_equal(rebuilt.get_parameters()[0]["weights"],
                                  mixed.get_parameters()[0]["weights"])
    mixed.save(tmp_path / "mixed.gnpy")
    assert Network.load(tmp_path / "mixed.gnpy").spec() == mixed.spec()
    lstm = RecurrentNetwork([LSTM(2, 3, init="he")], input=D1(2), device=device64, seed=1)
    assert lstm.spec()["layers"][0]["init"] == "he"
    with pytest.raises(ValueError, match=r"FullyConnected init must be one of \('scaled', "
                                         r"'grenade', 'xavier', 'he'\) or None"):
        FullyConnected(2, 2, init="uniform")
    with pytest.raises(ValueError, match=r"layers\[0\] \(Convolution\): Convolution init must"):
        Network.from_spec({"type": "Network", "input": "D3 2 2 1", "layers": [
            {"type": "Convolution", "channels": 1, "filters": 1, "kernel_rows": 1,
             "kernel_cols": 1, "stride_rows": 1, "stride_cols": 1, "init": "bad"}]}, device64)


def test_networks_built_from_a_spec_round_trip(device64):
    """spec() and from_spec() are inverses, nested networks and branches included; the built
    network has the same structure and, seeded alike, the same parameters."""
    from grenade_py import Concat, Gelu, LeakyRelu, Merge

    inner = Network([FullyConnected(3, 4), Tanh()], input=D1(3), device=device64, seed=2)
    net = Network([FullyConnected(2, 3), LeakyRelu(0.1),
                   Concat(inner, [FullyConnected(3, 2), Gelu()]),
                   Merge(FullyConnected(6, 5), [Relu(), FullyConnected(6, 5)]), Logit()],
                  input=D1(2), device=device64, seed=2)
    spec = json.loads(json.dumps(net.spec()))  # plain JSON
    built = Network.from_spec(spec, device64, seed=2)
    assert built.spec() == net.spec() and repr(built) == repr(net)
    again = Network.from_spec(spec, device64, seed=2)
    x = np.random.default_rng(1).normal(size=(4, 2))
    np.testing.assert_array_equal(run_net(built, x), run_net(again, x))


@pytest.mark.parametrize(("spec", "message"), [
    ({"type": "Network", "input": "D1 2", "layers": [{"type": "Dense"}]},
     "network.layers\\[0\\]: unknown layer type 'Dense'"),
    ({"type": "Network", "input": "D1 2", "layers": [{"type": "FullyConnected", "i": 2}]},
     "network.layers\\[0\\] \\(FullyConnected\\): .*missing 1 required positional argument: 'o'"),
    ({"type": "Network", "input": "D1 2",
      "layers": [{"type": "Merge", "a": {"type": "Tanh"}, "b": {"type": "Relu", "x": 1}}]},
     "network.layers\\[0\\].b \\(Relu\\): .*unexpected keyword argument 'x'"),
    ({"type": "Network", "input": "D9 2", "layers": [{"type": "Tanh"}]},
     "needs an \"input\" shape"),
    ({"type": "Series", "layers": []}, "a Network spec is an object with \"type\""),
])
def test_bad_specs_name_the_place(device64, spec, message):
    with pytest.raises(ValueError, match=message):
        Network.from_spec(spec, device64)


def test_a_spec_whose_shapes_do_not_chain(device64):
    spec = {"type": "Network", "input": "D1 2",
            "layers": [{"type": "FullyConnected", "i": 2, "o": 3},
                       {"type": "FullyConnected", "i": 4, "o": 1}]}
    with pytest.raises(ShapeError, match="layer 1 \\(FullyConnected 4 1\\) takes D1 4, but "
                                         "its input is D1 3"):
        Network.from_spec(spec, device64)


def test_set_parameters_takes_arrays_in_any_memory_order(device64):
    """A transposed view (Fortran order) is set by value, not refused by pyopencl."""
    net = Network([FullyConnected(3, 2)], input=D1(3), device=device64, seed=1)
    weights = np.arange(6.0).reshape(3, 2).T  # (2, 3), not C-contiguous
    net.set_parameters([{"weights": weights, "bias": np.zeros(2)}])
    np.testing.assert_array_equal(net.get_parameters()[0]["weights"], weights)


def _all_values(net):
    return [v for layers in (net.get_parameters(), net.get_momentum(), net.get_second())
            for layer in layers for v in layer.values()]


def test_a_deep_copy_trains_on_as_the_original_would(device64, rng):
    """copy.deepcopy keeps a network (Grenade's are values) while another trains: Adam's
    moments and step count, Dropout's key and counter, BatchNorm's running statistics and the
    last backward pass's gradients go with it, and nothing is shared."""
    import copy

    from grenade_py import Adam, BatchNorm, Dropout, apply_update, back_propagate, train
    net = Network([FullyConnected(3, 8), BatchNorm(8), Tanh(), Dropout(0.3),
                   FullyConnected(8, 2)], input=D1(3), device=device64, seed=5)
    batches = [(rng.normal(size=(6, 3)), rng.normal(size=(6, 2))) for _ in range(6)]
    opt = Adam(0.01)
    for x, y in batches[:3]:
        train(net, opt, x, y)
    back_propagate(net, *batches[0])
    kept = copy.deepcopy(net)
    before = _all_values(net)
    apply_update(kept, opt)
    for x, y in batches[3:]:
        train(kept, opt, x, y)
    for a, b in zip(before, _all_values(net), strict=True):  # the original did not move
        np.testing.assert_array_equal(a, b)
    assert net.steps == 3 and kept.steps == 7
    apply_update(net, opt)
    for x, y in batches[3:]:
        train(net, opt, x, y)
    for a, b in zip(_all_values(net), _all_values(kept), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(run_net(net, batches[0][0]), run_net(kept, batches[0][0]))
    assert net.layers[1].get_state() == kept.layers[1].get_state()  # running statistics
    assert (kept.optimizer_name, kept.device) == ("adam", net.device)


def test_deep_copies_of_recurrent_and_nested_networks(device64, rng):
    import copy

    from grenade_py import LSTM, RecurrentNetwork, run_recurrent
    rnet = RecurrentNetwork([LSTM(2, 3), FullyConnected(3, 2)], input=D1(2), device=device64,
                            seed=2)
    rcopy = copy.deepcopy(rnet)
    assert type(rcopy) is RecurrentNetwork
    x = rng.normal(size=(4, 2))
    np.testing.assert_array_equal(run_recurrent(rnet, x)[0], run_recurrent(rcopy, x)[0])
    inner = Network([FullyConnected(2, 3), Tanh()], input=D1(2), device=device64, seed=3)
    outer = Network([inner, FullyConnected(3, 1)], input=D1(2), device=device64, seed=4)
    alone = copy.deepcopy(inner)  # part of outer: its copy runs on its own
    assert not alone.nested
    np.testing.assert_array_equal(alone.get_parameters()[0]["weights"],
                                  outer.get_parameters()[0]["0.weights"])


def test_a_network_is_not_pickled_or_shallow_copied(device):
    """Nor is a layer placed in one; a layer not yet placed is, and a device is shared by
    copies (a user's object holding a network and its device deep-copies)."""
    import copy
    import pickle
    layer = FullyConnected(2, 1)
    assert repr(pickle.loads(pickle.dumps(layer))) == repr(copy.deepcopy(layer)) == repr(layer)
    net = Network([layer], input=D1(2), device=device)
    for attempt in (pickle.dumps, copy.copy):
        with pytest.raises(TypeError, match=r"cannot be pickled or shallow-copied: save it "
                           r"with net.save\(path\), or copy it with copy.deepcopy\(net\)"):
            attempt(net)
        with pytest.raises(TypeError, match=r"FullyConnected 2 1 is placed in a network.*"
                           r"copy the network \(copy.deepcopy\(net\)\), or build a new layer"):
            attempt(layer)
    held = copy.deepcopy({"net": net, "device": device})
    assert held["device"] is device and held["net"].device is device and held["net"] is not net


def test_parameter_count(device):
    """As PyTorch counts nn.Linear's: 784 x 512 + 512 + 512 x 10 + 10; a nested network's and
    BatchNorm's (scale and shift per feature) are counted, activations have none."""
    from grenade_py import BatchNorm, Softmax
    mlp = Network([FullyConnected(784, 512), Relu(), FullyConnected(512, 10), Softmax()],
                  input=D1(784), device=device)
    assert mlp.parameter_count == 407_050
    inner = Network([FullyConnected(3, 4), BatchNorm(4)], input=D1(3), device=device)
    outer = Network([inner, Tanh(), FullyConnected(4, 2)], input=D1(3), device=device)
    assert outer.parameter_count == (3 * 4 + 4) + 2 * 4 + (4 * 2 + 2)
