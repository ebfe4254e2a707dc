"""train / run_net / back_propagate / apply_update, against numpy, and their input checks."""
from __future__ import annotations

import numpy as np
import pytest

from grenade_py import (
    D1,
    FullyConnected,
    LearningParameters,
    Network,
    Relu,
    Softmax,
    Tanh,
    apply_update,
    back_propagate,
    run_net,
    train,
)
from grenade_py.feedforward import feedforward_network, sample
from grenade_py.numpy_reference import NumpyNetwork
from grenade_py.runner import QUEUED_BYTES

KINDS = ["FullyConnected", "Tanh", "FullyConnected", "Relu", "FullyConnected", "Logit"]
LP = LearningParameters(rate=0.01, momentum=0.9, l2=0.0005)


def test_per_example_training_equals_numpy_grenade(device64):
    """2,000 of Grenade's per-example steps equal a float64 numpy transcription to 1e-9."""
    net = feedforward_network(device64, seed=11, init="grenade")
    reference = NumpyNetwork(KINDS, net.get_parameters())
    xs, ys = sample(2000, np.random.default_rng(12))
    train(net, LP, xs, ys, per_example=True)
    reference.train_per_example(xs, ys, LP)
    for got, expected in zip(net.get_parameters(), reference.parameters, strict=True):
        for name in expected:
            np.testing.assert_allclose(got[name], expected[name], rtol=1e-9, atol=1e-12)
    for got, expected in zip(net.get_momentum(), reference.momentum, strict=True):
        for name in expected:
            np.testing.assert_allclose(got[name], expected[name], rtol=1e-9, atol=1e-12)


def test_batch_step_averages_per_example_gradients(device64, rng):
    net = Network([FullyConnected(3, 4), Tanh(), FullyConnected(4, 2)], input=D1(3),
                  device=device64, seed=4)
    x, y = rng.normal(size=(7, 3)), rng.normal(size=(7, 2))
    batch = back_propagate(net, x, y)
    singles = [back_propagate(net, x[i], y[i]) for i in range(7)]
    for index, layer_grads in enumerate(batch):
        for name, value in layer_grads.items():
            mean = np.mean([s[index][name] for s in singles], axis=0)
            np.testing.assert_allclose(value, mean, rtol=1e-12, atol=1e-14)


def test_back_propagate_and_apply_update_against_numpy(device64, rng):
    """back_propagate's gradients are numpy's; apply_update is one descent step of every
    parameter from them, and train is the two together."""
    def make():
        return Network([FullyConnected(2, 3), Relu(), FullyConnected(3, 1)], input=D1(2),
                       device=device64, seed=9)

    x, y = rng.normal(size=(5, 2)), rng.normal(size=(5, 1))
    a, b = make(), make()
    reference = NumpyNetwork(["FullyConnected", "Relu", "FullyConnected"], a.get_parameters())
    expected = reference.gradients(x, y)
    grads = back_propagate(a, x, y)
    for got, want in zip(grads, expected, strict=True):
        assert set(got) == set(want)
        for name in want:
            np.testing.assert_allclose(got[name], want[name], rtol=1e-12, atol=1e-14)
    apply_update(a, LP)
    reference.update(expected, LP)
    train(b, LP, x, y)
    for pa, pb, want in zip(a.get_parameters(), b.get_parameters(), reference.parameters,
                            strict=True):
        for name in want:
            np.testing.assert_allclose(pa[name], want[name], rtol=1e-12, atol=1e-14)
            np.testing.assert_array_equal(pa[name], pb[name])


def test_run_net_single_sample_and_chunks(device, rng, monkeypatch):
    net = Network([FullyConnected(2, 3), Tanh()], input=D1(2), device=device, seed=1)
    x = rng.normal(size=(10, 2))
    whole = run_net(net, x)
    assert whole.shape == (10, 3) and run_net(net, x[0]).shape == (3,)
    np.testing.assert_allclose(run_net(net, x[3]), whole[3], rtol=1e-6)
    monkeypatch.setattr("grenade_py.runner.RUN_CHUNK", 3)
    np.testing.assert_allclose(run_net(net, x), whole, rtol=1e-6)


@pytest.mark.parametrize("x, message", [
    (np.zeros((4, 3)), r"shape \(4, 3\).*D1 2"),
    (np.zeros((0, 2)), r"N >= 1"),
    (np.array([[0.0, np.nan]]), "NaN or Inf"),
    (np.array([[np.inf, 0.0]]), "NaN or Inf"),
    (np.array([["a", "b"]]), "real numbers"),
    (np.array([[1 + 1j, 0]]), "real numbers"),
    (np.array([[True, False]]), "real numbers"),
    (np.array([[1.0, None]], dtype=object), "real numbers"),
    (np.array([[1, 2]], dtype="m8[s]"), "real numbers"),
    ([[1.0, 2.0], [3.0]], "^x is not one array of numbers: setting an array element with a "
     "sequence|^x must be real numbers, got dtype object"),  # (numpy < 1.24: an object array)
])
def test_bad_inputs_are_value_errors(device, x, message):
    net = Network([FullyConnected(2, 1)], input=D1(2), device=device)
    with pytest.raises(ValueError, match=message):
        run_net(net, x)
    with pytest.raises(ValueError, match=message):
        train(net, LP, x, np.zeros((len(x), 1)))


def test_mismatched_targets(device):
    net = Network([FullyConnected(2, 1)], input=D1(2), device=device)
    with pytest.raises(ValueError, match=r"y has shape \(3, 2\), but the network outputs D1 1"):
        train(net, LP, np.zeros((3, 2)), np.zeros((3, 2)))
    wide = Network([FullyConnected(2, 3), Softmax()], input=D1(2), device=device)
    hint = r" \(class labels as one-hot rows: np.eye\(3\)\[labels\]\)$"
    with pytest.raises(ValueError, match=r"outputs D1 3: .*" + hint):
        train(wide, LP, np.zeros((5, 2)), np.array([0, 2, 1, 1, 0]), loss="cross_entropy")
    with pytest.raises(ValueError, match="x has 3 samples but y has 1" + hint):  # (3,): 1 sample
        train(wide, LP, np.zeros((3, 2)), np.array([0, 2, 1]), loss="cross_entropy")
    with pytest.raises(ValueError, match="3 samples but y has 2"):
        train(net, LP, np.zeros((3, 2)), np.zeros((2, 1)))
    with pytest.raises(TypeError, match="LearningParameters"):
        train(net, 0.1, np.zeros((3, 2)), np.zeros((3, 1)))


@pytest.mark.parametrize("kwargs, message", [
    ({"rate": 0}, "rate must be > 0"),
    ({"rate": -1}, "rate must be > 0"),
    ({"rate": float("nan")}, "rate must be finite"),
    ({"rate": 0.1, "momentum": 1.0}, r"momentum must be in \[0, 1\)"),
    ({"rate": 0.1, "momentum": -0.1}, "momentum"),
    ({"rate": 0.1, "l2": -1e-3}, "l2 must be >= 0"),
    ({"rate": 0.1, "l2": float("inf")}, "l2 must be finite"),
    ({"rate": "0.1"}, "must be a number"),
])
def test_bad_learning_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LearningParameters(**kwargs)


@pytest.mark.parametrize("lp", [LearningParameters(1e300), LearningParameters(0.1, l2=1e300),
                                LearningParameters(1e20, l2=1e20)])
def test_learning_parameters_beyond_float32_are_refused(lp):
    from conftest import get_device

    net = Network([FullyConnected(2, 1)], input=D1(2), device=get_device("float32"), seed=1)
    before = net.get_parameters()
    x, y = np.zeros((3, 2)), np.zeros((3, 1))
    for call in (lambda: train(net, lp, x, y), lambda: train(net, lp, x, y, per_example=True),
                 lambda: apply_update(net, lp)):
        with pytest.raises(ValueError, match="overflows float32"):
            call()
    np.testing.assert_array_equal(net.get_parameters()[0]["weights"], before[0]["weights"])


def test_values_beyond_float32_are_refused():
    from conftest import get_device

    net = Network([FullyConnected(2, 1)], input=D1(2), device=get_device("float32"), seed=1)
    with pytest.raises(ValueError, match="NaN or Inf in float32"):
        train(net, LP, np.full((1, 2), 1e39), np.zeros((1, 1)))
    with pytest.raises(ValueError, match="y holds NaN or Inf in float32"):
        train(net, LP, np.zeros((1, 2)), np.full((1, 1), 1e39))
    params = net.get_parameters()
    params[0]["bias"] = np.array([1e300])
    with pytest.raises(ValueError, match="finite numbers in float32"):
        net.set_parameters(params)
    params[0]["bias"] = np.array([1 + 1j])
    with pytest.raises(ValueError, match="real numbers"):
        net.set_parameters(params)


def test_grenade_low_level_api(device64, rng):
    """run_network keeps tapes of its own; run_gradient from dy = (y - t) / n gives
    back_propagate's gradients and the input's delta; apply_update applies given gradients."""
    from grenade_py import Device, run_gradient, run_network

    def make():
        return Network([FullyConnected(3, 4), Tanh(), FullyConnected(4, 2)], input=D1(3),
                       device=device64, seed=5)

    net, reference = make(), make()
    x1, x2, t = rng.normal(size=(5, 3)), rng.normal(size=(5, 3)), rng.normal(size=(5, 2))
    tapes1, y1 = run_network(net, x1)
    tapes2, y2 = run_network(net, x2)  # does not disturb tapes1
    np.testing.assert_allclose(y1, run_net(net, x1), rtol=1e-12)
    grads, dx = run_gradient(net, tapes1, (y1 - t) / 5)
    back_propagate(reference, x1, t)
    run_gradient(net, tapes2, np.ones((5, 2)))  # leaves other gradients on the device...
    apply_update(net, LP, grads)  # ...but these are applied
    apply_update(reference, LP)
    for a, b in zip(net.get_parameters(), reference.get_parameters(), strict=True):
        for name in a:
            np.testing.assert_allclose(a[name], b[name], rtol=1e-12, atol=1e-14)
    again, y3 = run_network(net, x2, reuse=tapes2)  # the same buffers, a new pass
    assert again is tapes2
    np.testing.assert_allclose(y3, run_net(net, x2), rtol=1e-12)
    numpy_net = NumpyNetwork(["FullyConnected", "Tanh", "FullyConnected"],
                             make().get_parameters())
    acts = numpy_net.forward(x1)
    delta = (acts[-1] - t) / 5
    delta = (delta @ numpy_net.parameters[2]["weights"]) * (1 - acts[2] ** 2)
    np.testing.assert_allclose(dx, delta @ numpy_net.parameters[0]["weights"], rtol=1e-10)
    elsewhere = Network.from_spec(net.spec(), device=Device(precision="float64"))
    with pytest.raises(ValueError, match="another Device object holds the gradients, not "
                       "the network's"):
        apply_update(elsewhere, LP, grads)  # (OpenCL's INVALID_CONTEXT before)
    with pytest.raises(TypeError, match="gradients must be what run_gradient returns, got list"):
        apply_update(net, LP, back_propagate(net, x1, t))
    smaller = Network([FullyConnected(3, 2)], input=D1(3), device=device64)
    with pytest.raises(ValueError, match="^these gradients belong to another network$"):
        apply_update(smaller, LP, grads)
    with pytest.raises(ValueError, match="^dy has 4 samples but the tapes hold 5$"):
        run_gradient(net, tapes1, np.ones((4, 2)))


def test_dropped_tapes_serve_the_next_pass(device64, rng, monkeypatch):
    """Tapes that are dropped leave their Step on the network (up to Tapes.kept) for the next
    run_network over as many rows, so a loop of run_network calls that does not pass `reuse`
    builds two Steps, not one a call (3-4x the pass's own time); tapes still held are never
    taken, the pass through a left Step gives what a new one gives, and no more than
    Tapes.kept Steps of at most Tapes.kept_bytes wait."""
    from grenade_py import Tapes, run_gradient, run_network

    net = Network([FullyConnected(3, 4), Tanh(), FullyConnected(4, 2)], input=D1(3),
                  device=device64, seed=5)
    x, dy = rng.normal(size=(5, 3)), rng.normal(size=(5, 2))
    tapes, y = run_network(net, x)
    fresh = run_gradient(net, tapes, dy)
    steps = {id(tapes.step)}
    for _ in range(4):  # the loop as Grenade's users write it: no reuse
        tapes, again = run_network(net, x)
        steps.add(id(tapes.step))
        np.testing.assert_array_equal(again, y)
        grads, dx = run_gradient(net, tapes, dy)
        np.testing.assert_array_equal(dx, fresh[1])
        np.testing.assert_array_equal(grads.flat.get(), fresh[0].flat.get())
    assert len(steps) == 2
    held = [run_network(net, x)[0] for _ in range(3)]  # held at once: a Step each
    assert len({id(t.step) for t in held}) == 3
    assert run_network(net, x[:2])[0].step.rows == 2  # other rows: another Step
    many = [run_network(net, x)[0] for _ in range(Tapes.kept + 3)]
    del held, many
    assert len(net.held["free tapes"]) == Tapes.kept
    small, big = run_network(net, x)[0], run_network(net, np.zeros((40, 3)))[0]
    net.held["free tapes"].clear()
    monkeypatch.setattr(Tapes, "kept_bytes", small.step.nbytes + big.step.nbytes - 1)
    del small, big  # the second is more than the bytes left: let go of
    assert [step.rows for step in net.held["free tapes"]] == [5]


def test_low_level_api_on_device_arrays(device64, rng):
    """run_network and run_gradient take device arrays (slices of larger ones too) and give
    device arrays: the same values as from host arrays, with nothing read back; a device array
    of another shape, precision or device is refused."""
    import pyopencl.array as cl_array

    from grenade_py import Device, run_gradient, run_network

    nets = [Network([FullyConnected(3, 4), Tanh(), FullyConnected(4, 2)], input=D1(3),
                    device=device64, seed=5) for _ in range(2)]
    xs, dy = rng.normal(size=(7, 3)), rng.normal(size=(3, 2))
    tapes, y = run_network(nets[0], xs[2:5])
    grads, dx = run_gradient(nets[0], tapes, dy)
    on_device = device64.to_device(xs)
    tapes_d, y_d = run_network(nets[1], on_device[2:5])  # a slice: an offset into the buffer
    grads_d, dx_d = run_gradient(nets[1], tapes_d, device64.to_device(dy))
    assert isinstance(y_d, cl_array.Array) and isinstance(dx_d, cl_array.Array)
    np.testing.assert_array_equal(y_d.get(), y)
    np.testing.assert_array_equal(dx_d.get(), dx)
    np.testing.assert_array_equal(grads_d.flat.get(), grads.flat.get())
    run_network(nets[1], on_device[:3], reuse=tapes_d)  # y_d is the caller's: not overwritten
    np.testing.assert_array_equal(y_d.get(), y)
    for bad in (on_device[:, :2], device64.to_device(xs.reshape(7, 3, 1)),
                cl_array.to_device(device64.queue, xs.astype(np.float32))):
        with pytest.raises(ValueError, match="contiguous \\(N, 3\\) array of float64"):
            run_network(nets[1], bad)
    with pytest.raises(ValueError, match=r"another Device object holds x, not the network's "
                       r".*: build them with one"):
        run_network(nets[1], Device(precision="float64").to_device(xs))
    with pytest.raises(ValueError, match="contiguous \\(N, 2\\) array"):
        run_gradient(nets[1], tapes_d, device64.to_device(np.ones((3, 3))))
    before = nets[0].flat["gradients"].get()
    for other in (tapes_d, "tapes"):  # another network's: its backward pass would have run
        with pytest.raises(ValueError, match="tapes must be what run_network returned for "
                           "this network"):
            run_gradient(nets[0], other, dy)
    np.testing.assert_array_equal(nets[0].flat["gradients"].get(), before)


def test_the_network_holds_its_last_steps(device, monkeypatch):
    """run_net and train keep the Steps of the network's last MAX_STEPS batch shapes on the
    network (reused from call to call: the same buffers), the least recently used dropped
    (here where no more fit in STEPS_BYTES)."""
    from grenade_py import execution

    monkeypatch.setattr(execution, "STEPS_BYTES", 0)
    net = Network([FullyConnected(3, 2)], input=D1(3), device=device, seed=1)
    first = execution.steps(net, 1, inference=True)
    for n in (2, 3, 4):
        run_net(net, np.zeros((n, 3)))
    assert execution.steps(net, 1, inference=True) is first  # still held; now the newest
    run_net(net, np.zeros((5, 3)))  # drops batch 2's, the least recently used
    held = [key for key in net.held if key[0] == "step"]
    assert len(held) == execution.MAX_STEPS
    assert [key[2] for key in held] == [3, 4, 1, 5]
    train(net, LP, np.zeros((3, 3)), np.zeros((3, 2)))  # a training Step is another shape
    assert [key[2] for key in net.held if key[0] == "step"] == [4, 1, 5, 3]
    newest = execution.steps(net, 3)
    train(net, LP, np.zeros((3, 3)), np.zeros((3, 2)))  # the newest again: nothing moves
    assert execution.steps(net, 3) is newest
    assert [key[2] for key in net.held if key[0] == "step"] == [4, 1, 5, 3]


def test_small_steps_are_held_up_to_their_bytes(device, monkeypatch):
    """Past MAX_STEPS, a network holds more Steps while all of them together hold at most
    STEPS_BYTES of buffers, up to STEPS_KEPT: run_net over 8 batch sizes in turn built each
    Step anew on every call when 4 were held (1.9 ms a call against 0.4 for the MNIST MLP)."""
    from grenade_py import execution

    net = Network([FullyConnected(3, 2)], input=D1(3), device=device, seed=1)
    sizes = range(1, 9)
    made = [execution.steps(net, n, inference=True) for n in sizes]
    assert all(execution.steps(net, n, inference=True) is step
               for n, step in zip(sizes, made, strict=True))  # all 8 held
    each = made[0].nbytes  # batch 1's, the smallest
    assert 0 < each < made[-1].nbytes
    monkeypatch.setattr(execution, "STEPS_KEPT", 6)
    execution.steps(net, 9, inference=True)
    assert [key[2] for key in net.held if key[0] == "step"] == [4, 5, 6, 7, 8, 9]
    monkeypatch.setattr(execution, "STEPS_BYTES", sum(
        net.held[key].nbytes for key in net.held if key[0] == "step") - 1)
    execution.steps(net, 4, inference=True)  # held: now the newest; over the bytes by one
    assert [key[2] for key in net.held if key[0] == "step"] == [6, 7, 8, 9, 4]


def test_the_backward_pass_stops_at_the_lowest_layer_with_parameters(device64, rng):
    """A Step's backward pass leaves out the layers below the lowest with parameters (and that
    layer's input delta) unless the input's delta is asked for: the same gradients either way,
    and run_gradient's input delta that of the whole chain."""
    from grenade_py import Reshape, run_gradient, run_network
    from grenade_py.execution import Step
    from grenade_py.shapes import D2

    net = Network([Reshape(D1(12)), Tanh(), FullyConnected(12, 5), Relu(), FullyConnected(5, 3)],
                  input=D2(3, 4), device=device64, seed=1)
    x, dy = rng.normal(size=(7, 3, 4)), rng.normal(size=(7, 3))
    steps = {wanted: Step(net, 7, input_delta=wanted) for wanted in (False, True)}
    names = {wanted: [launch.kernel.function_name for launch in step.backward_launches()]
             for wanted, step in steps.items()}
    assert "tanh_backward" not in names[False] and "tanh_backward" in names[True]
    assert len(names[False]) < len(names[True])
    tapes, _ = run_network(net, x)
    grads, dx = run_gradient(net, tapes, dy)
    for step in steps.values():
        step.input.set(x)
        step.forward(True)
        step.delta.set(dy)
        for launch in step.backward_launches()[1:]:  # from dy itself, not the loss gradient
            launch()
        np.testing.assert_allclose(net.flat["gradients"].get(), grads.flat.get(), rtol=1e-12,
                                   atol=1e-15)
    w1 = net.get_parameters()[2]["weights"]
    h = np.tanh(x.reshape(7, 12)) @ w1.T + net.get_parameters()[2]["bias"]
    w2 = net.get_parameters()[4]["weights"]
    want_dx = ((dy @ w2) * (h > 0)) @ w1 * (1 - np.tanh(x.reshape(7, 12)) ** 2)
    np.testing.assert_allclose(dx, want_dx.reshape(x.shape), rtol=1e-10, atol=1e-12)


def test_a_relu_next_to_a_fully_connected_layer_runs_in_its_launches(device, rng):
    """In batches, a Relu after a FullyConnected layer runs in its forward GEMM and one before
    it in its input delta's GEMM (FullyConnected.relu_fused): their own launches left out, and
    the same bits as with them, in fit, run_network, run_gradient (to the input's delta, through
    the first Relu) and run_net."""
    from grenade_py import fit, run_gradient, run_network
    from grenade_py.execution import Step

    def make(fused):
        net = Network([Relu(), FullyConnected(5, 9), Relu(), FullyConnected(9, 17), Relu(),
                       FullyConnected(17, 3)], input=D1(5), device=device, seed=3)
        if not fused:
            for layer in net.layers[1::2]:
                layer.relu_fused = lambda n: False
        return net

    nets = {fused: make(fused) for fused in (True, False)}
    for fused, net in nets.items():
        step = Step(net, 6, input_delta=True)
        names = [launch.kernel.function_name
                 for launch in step.forward_launches(True) + step.backward_launches()]
        assert names.count("relu_forward") == (1 if fused else 3)  # the first has no layer below
        assert names.count("relu_backward") == (0 if fused else 3)
    x, y = rng.normal(size=(22, 5)), rng.normal(size=(22, 3))
    got = {}
    for fused, net in nets.items():
        fit(net, LP, x, y, batch_size=4, epochs=3, seed=2)
        tapes, out = run_network(net, x[:6])
        grads, dx = run_gradient(net, tapes, y[:6])
        got[fused] = [out, grads.flat.get(), dx, run_net(net, x[:7]), net.flat["parameters"].get()]
    for a, b in zip(got[True], got[False], strict=True):
        np.testing.assert_array_equal(a, b)


def test_train_returns_before_its_step_runs_and_copies_the_callers_arrays(device, rng):
    """train queues its step and returns (the device runs up to two calls behind the host):
    arrays the caller overwrites at once (of the device's precision: nothing converted them)
    still train as they were, and the result equals training that waits for each step."""
    waited, queued = (Network([FullyConnected(30, 200), Tanh(), FullyConnected(200, 5)],
                              input=D1(30), device=device, seed=4) for _ in range(2))
    lp = LearningParameters(rate=0.01, momentum=0.9, l2=0.0001)
    batches = [(rng.normal(size=(64, 30)).astype(device.dtype),
                rng.normal(size=(64, 5)).astype(device.dtype)) for _ in range(12)]
    for x, y in batches:
        train(waited, lp, x, y)
        waited.device.queue.finish()
    for x, y in batches:
        x_, y_ = x.copy(), y.copy()
        train(queued, lp, x_, y_)
        x_[:], y_[:] = np.nan, np.nan  # the caller's arrays, reused at once
    for a, b in zip(waited.get_parameters(), queued.get_parameters(), strict=True):
        for name in a:
            np.testing.assert_array_equal(a[name], b[name])
    # A large batch is copied in place and waited for: nothing of it stays held.
    x = rng.normal(size=(QUEUED_BYTES // 4 // 30 + 1, 30)).astype(device.dtype)
    train(queued, lp, x, np.zeros((len(x), 5), device.dtype))
    assert queued.held["queued"] == []
