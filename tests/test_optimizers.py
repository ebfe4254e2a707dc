"""The optimisers (grenade_py.optimizers, kernels/optimizers.cl) on every training path: the flat
update against torch.optim on the same gradients, clipping against clip_grad_norm_, the fused
per-example loop against batch-1 steps, Grenade-ordered recurrent updates against a numpy
transcription, schedules, and model files that resume Adam exactly."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from conftest import assert_equal_or_close
from test_recurrent import assert_same, nets, sequence, with_states

import grenade_py as g
from grenade_py import execution, optimizers
from grenade_py.device import streaming_size
from grenade_py.fused import kernels_bits
from grenade_py.mnist import mnist_network
from grenade_py.numpy_recurrent import NumpyRecurrent
from grenade_py.numpy_reference import adam
from grenade_py.optimizers import SGD, Adam, AdamW
from grenade_py.schedules import schedule_rate

SIZES = [1, 3, 17, 257]


def kernel_args(device, opt, t):
    return tuple(device.dtype(v) for v in (*opt.kernel_values(), *opt.powers(t, device.dtype)))


@pytest.mark.parametrize("count", SIZES + [20011])  # more than a group of 1024 x 8
@pytest.mark.parametrize("opt", [Adam(0.01, weight_decay=0.1), AdamW(0.01, 0.8, 0.9, 1e-6, 0.1)])
def test_adam_kernel_against_numpy(device, rng, count, opt):
    dt, t = device.dtype, 7
    w, m, g_ = (rng.normal(size=count).astype(dt) for _ in range(3))
    v = rng.uniform(size=count).astype(dt)
    arrays = [device.to_device(a) for a in (w, m, v)]
    device.launch(f"optimizer_update_{opt.kernel}", streaming_size(count), count,
                  *kernel_args(device, opt, t), *arrays, device.to_device(g_))()
    want = adam(w.astype(float), m.astype(float), v.astype(float), g_.astype(float), t,
                opt.rate, opt.beta1, opt.beta2, opt.eps, opt.weight_decay,
                isinstance(opt, AdamW))
    rtol = 1e-5 if device.precision == "float32" else 1e-14
    for got, expected in zip(arrays, want, strict=True):
        np.testing.assert_allclose(got.get(), expected, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("count", SIZES + [4099, 20011])
def test_clip_scale_is_clip_grad_norms_factor(device, rng, count):
    g_ = rng.normal(size=count)
    scale = device.zeros((1,))
    norm = float(np.linalg.norm(g_.astype(device.dtype).astype(float)))
    rtol = 1e-5 if device.precision == "float32" else 1e-13
    for max_norm in (norm / 3, norm * 2):
        g_dev = device.to_device(g_)
        device.launch("optimizer_clip_scale", (64,), count, device.dtype(max_norm), g_dev, scale,
                      local=(64,))()
        want = min(1.0, max_norm / (norm + 1e-6))
        np.testing.assert_allclose(scale.get()[0], want, rtol=rtol)
        device.launch("optimizer_clip", streaming_size(count), count, scale, g_dev)()
        np.testing.assert_allclose(g_dev.get(), g_ * want, rtol=rtol)


def flat(parameters):
    return [value for layer in parameters for _, value in sorted(layer.items())]


def torch_optimizer(torch, opt, params):
    kwargs = {"lr": opt.rate, "betas": (opt.beta1, opt.beta2), "eps": opt.eps,
              "weight_decay": opt.weight_decay}
    return (torch.optim.AdamW if isinstance(opt, AdamW) else torch.optim.Adam)(params, **kwargs)


@pytest.mark.parametrize("arch", ["mlp", "lenet"])
@pytest.mark.parametrize("opt", [Adam(0.003, weight_decay=0.01), AdamW(0.003, clip_norm=0.5)])
def test_adam_and_adamw_equal_torch_on_the_same_gradients(device64, rng, arch, opt):
    """100 float64 steps: each step's gradients come from back_propagate, and torch's optimiser
    (with clip_grad_norm_ where the optimiser clips) gets the same; the parameters stay within
    1e-9 relative of torch's."""
    torch = pytest.importorskip("torch", reason="torch is the oracle (pip install '.[test]')")
    net = mnist_network(arch, device64, seed=3) if arch == "lenet" else g.Network(
        [g.FullyConnected(784, 48), g.Relu(), g.FullyConnected(48, 10), g.Softmax()],
        input=g.D1(784), device=device64, seed=3)
    shape = (8, *net.input_shape.dims)
    params = [torch.tensor(v, requires_grad=True) for v in flat(net.get_parameters())]
    reference = torch_optimizer(torch, opt, params)
    clipped = 0
    for _ in range(100):
        x = rng.normal(size=shape)
        y = np.eye(10)[rng.integers(0, 10, size=8)]
        grads = flat(g.back_propagate(net, x, y, loss="cross_entropy"))
        for p, grad in zip(params, grads, strict=True):
            p.grad = torch.tensor(grad)
        if opt.clip_norm is not None:
            clipped += float(torch.nn.utils.clip_grad_norm_(params, opt.clip_norm)) > opt.clip_norm
        reference.step()
        g.apply_update(net, opt)
    assert net.steps == 100
    if opt.clip_norm is not None:
        assert clipped > 10  # the clipping was exercised
    for got, want in zip(flat(net.get_parameters()), params, strict=True):
        np.testing.assert_allclose(got, want.detach().numpy(), rtol=1e-9, atol=1e-12)
    second = flat(net.get_second())
    for got, p in zip(second, params, strict=True):
        np.testing.assert_allclose(got, reference.state[p]["exp_avg_sq"].numpy(), rtol=1e-9,
                                   atol=1e-15)


def circles(device, seed=1):
    return g.Network([g.FullyConnected(2, 12), g.Tanh(), g.FullyConnected(12, 5), g.Relu(),
                      g.FullyConnected(5, 1), g.Logit()], input=g.D1(2), device=device,
                     seed=seed)


@pytest.mark.parametrize("opt", [SGD(0.05), Adam(0.01, weight_decay=0.001), AdamW(0.01),
                                 Adam(0.01, clip_norm=0.05)])
def test_per_example_training_equals_batch_one_steps(device64, rng, opt):
    """train(per_example=True) (the fused loop, or layer by layer where the optimiser clips)
    is one optimiser step per example: batch-1 train calls in order give the same weights, to
    the bit where the loop sums as the kernels do (kernels_bits: not on a GPU, whose loop's
    lanes share a row's sum), else to rounding."""
    x = rng.uniform(-1, 1, size=(300, 2))
    y = (np.linalg.norm(x - 0.3, axis=1, keepdims=True) < 0.5).astype(float)
    fused, stepped = circles(device64), circles(device64)
    assert execution.fused(fused, opt.kind) is not None  # used unless the optimiser clips
    g.train(fused, opt, x, y, per_example=True)
    for i in range(len(x)):
        g.train(stepped, opt, x[i:i + 1], y[i:i + 1])
    assert fused.steps == stepped.steps == 300
    exact = kernels_bits(fused) or opt.clip_norm is not None
    for a, b in zip(flat(fused.get_parameters()), flat(stepped.get_parameters()), strict=True):
        assert_equal_or_close(a, b, exact)
    start = flat(circles(device64).get_parameters())
    assert max(np.abs(a - b).max() for a, b in zip(start, flat(fused.get_parameters()),
                                                   strict=True)) > 1e-2  # it did train


@pytest.mark.parametrize("opt", [Adam(0.003), AdamW(0.003, weight_decay=0.05)])
def test_adam_gives_the_same_bits_however_its_steps_fall_into_launches(device, rng, opt):
    """Adam's powers beta^t at a launch's first step (the host's) and at the steps after it (the
    loop's) are formed alike (optimizers.power), so per-example training in one launch, in a
    launch per 1% (a progress callback), as fit's batch-1 epoch and as one train call per
    example reach the same weights and moments to the bit, in both precisions (one train call
    per example to rounding on a GPU, where it runs kernels whose sums the loop's lanes share
    out otherwise: kernels_bits). (With torch's beta ** t at each launch's start they were up
    to 2e-6 of the weights' scale apart in float32 after 600 steps.)"""
    x = rng.normal(size=(600, 8))
    y = np.tanh(x[:, :3] * 0.7)
    nets_ = [g.Network([g.FullyConnected(8, 16), g.Tanh(), g.FullyConnected(16, 3)],
                       input=g.D1(8), device=device, seed=2) for _ in range(4)]
    g.train(nets_[0], opt, x, y, per_example=True)
    g.train(nets_[1], opt, x, y, per_example=True, progress=lambda done: None)
    g.fit(nets_[2], opt, x, y, batch_size=1, shuffle=False)
    for i in range(len(x)):
        g.train(nets_[3], opt, x[i], y[i])
    for other in nets_[1:]:
        assert other.steps == 600
        exact = other is not nets_[3] or kernels_bits(other)
        for role in ("get_parameters", "get_momentum", "get_second"):
            for a, b in zip(flat(getattr(nets_[0], role)()), flat(getattr(other, role)()),
                            strict=True):
                assert_equal_or_close(a, b, exact, err_msg=role)


@pytest.mark.parametrize("hidden", [3, 40])  # the window loop; layer by layer
def test_sequences_under_adam_give_the_same_bits_in_one_call_or_several(device, hidden):
    """Grenade's ordered Adam steps over six sequences: one train_sequences call, one per
    sequence, or two and four, reach the same bits (the window loop of the small network takes
    each call in one launch; it advances beta^t as optimizers.power forms it)."""
    rng = np.random.default_rng(1)
    xs, ts = rng.normal(size=(6, 9, 2)), rng.uniform(size=(6, 9, 2))
    mask = rng.uniform(size=(6, 9)) < 0.5
    nets_ = [g.RecurrentNetwork([g.LSTM(2, hidden), g.FullyConnected(hidden, 2), g.Logit()],
                                input=g.D1(2), device=device, seed=3) for _ in range(3)]
    opt = Adam(0.003)
    g.train_sequences(nets_[0], opt, xs, ts, mask)
    for s in range(6):
        g.train_sequences(nets_[1], opt, xs[s:s + 1], ts[s:s + 1], mask[s:s + 1])
    for part in (slice(0, 2), slice(2, 6)):
        g.train_sequences(nets_[2], opt, xs[part], ts[part], mask[part])
    for other in nets_[1:]:
        for a, b in zip(flat(nets_[0].get_parameters()), flat(other.get_parameters()),
                        strict=True):
            np.testing.assert_array_equal(a, b)


def test_power_is_the_loops_product_from_any_step_asked_before():
    """optimizers.power: beta multiplied into 1 t times in the precision, each product
    rounded there, whichever steps were asked before (it continues from the nearest below)."""
    for dtype in (np.float32, np.float64):
        beta = 0.999
        product, want = dtype(1), {}
        for t in range(1, 3001):
            product = dtype(product * dtype(beta))
            want[t] = float(product)
        asked = [1, 2, 3000, 17, 2999, 5, 1500, 3000, 1, 1024]
        for t in asked:
            assert optimizers.power(beta, t, dtype) == want[t], (dtype, t)
        assert optimizers.power(beta, 0, dtype) == 1.0


@pytest.mark.parametrize("opt", [Adam(0.01, weight_decay=0.01), AdamW(0.02, weight_decay=0.1)])
def test_ordered_recurrent_adam_matches_the_transcription(device64, opt):
    """Grenade's ordered per-step updates under Adam: every per-step gradient one Adam step,
    the starting states one Adam step per sequence, against numpy_recurrent."""
    rng = np.random.default_rng(4)
    for net in nets(device64, 3, 5):
        with_states(net, rng)
        ref = NumpyRecurrent([layer.spec() for layer in net.layers], net.get_parameters())
        for _ in range(3):
            xs, targets = sequence(net, 4, rng)
            g.train_recurrent(net, opt, list(zip(xs, targets, strict=True)))
            ref.train(xs, targets, opt)
        assert (net.steps, net.state_steps) == (ref.t, ref.state_t) == (12, 3)
        assert_same(net, ref, rtol=1e-10, atol=1e-12)


def test_recurrent_updates_follow_each_calls_optimiser(device64):
    """One network's sequence Step trained under SGD at two rates, then Adam, then SGD again:
    each call's values reach the update kernels (they are set only when they change), as the
    transcription computes them; at each switch between SGD and Adam the optimiser state
    starts from zero (take_state), the transcription's too."""
    rng = np.random.default_rng(8)
    net = nets(device64, 3, 5)[0]
    with_states(net, rng)
    ref = NumpyRecurrent([layer.spec() for layer in net.layers], net.get_parameters())
    xs, targets = sequence(net, 4, rng)
    for opt in (SGD(0.05, 0.9, 0.01), SGD(0.02, 0.5, 0.0), Adam(0.01), SGD(0.05, 0.9, 0.01)):
        if net.optimizer_name not in (None, opt.kernel):
            for moments in (*ref.momentum, *ref.second):
                for value in moments.values():
                    value[...] = 0
            ref.t = ref.state_t = 0
        for _ in range(2):
            g.train_recurrent(net, opt, list(zip(xs, targets, strict=True)))
            ref.train(xs, targets, opt)
        assert_same(net, ref, rtol=1e-10, atol=1e-12)


def test_summed_recurrent_adam_matches_the_transcription(device64):
    rng = np.random.default_rng(6)
    opt = Adam(0.01)
    net = nets(device64, 3, 5)[0]
    with_states(net, rng)
    ref = NumpyRecurrent([layer.spec() for layer in net.layers], net.get_parameters())
    xs, targets = sequence(net, 5, rng, every=1)
    g.train_sequences(net, opt, xs[None], np.stack(targets)[None], np.ones((1, 5), bool),
                      summed=True)
    ref.train(xs, targets, opt, summed=True)
    assert_same(net, ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("opt", [SGD(0.05, clip_norm=0.02), Adam(0.01, clip_norm=0.02)])
def test_recurrent_clipping_matches_the_transcription(device64, opt):
    """clip_grad_norm_ on recurrent networks: in Grenade's order each step's gradient, summed
    the sum's, over every parameter but the starting states (a factor small enough to clip)."""
    for index in range(7):
        for summed in (False, True):
            net = nets(device64, 3, 5)[index]
            with_states(net, np.random.default_rng(8))
            ref = NumpyRecurrent([layer.spec() for layer in net.layers], net.get_parameters())
            xs, targets = sequence(net, 4, np.random.default_rng(9), every=1)
            g.train_sequences(net, opt, xs[None], np.stack(targets)[None], np.ones((1, 4), bool),
                              summed=summed)
            ref.train(xs, targets, opt, summed=summed)
            assert_same(net, ref, rtol=1e-10, atol=1e-12)
            assert ref.clipped == (1 if summed else 4)  # the clipping bit every time


def dropout_net(device):
    return g.Network([g.FullyConnected(3, 16), g.Tanh(), g.Dropout(0.3), g.FullyConnected(16, 2)],
                     input=g.D1(3), device=device, seed=9)


@pytest.mark.parametrize("opt", [Adam(0.01), SGD(0.05)])
def test_a_saved_model_resumes_exactly(device64, rng, tmp_path, opt):
    """Adam's moments and step count, and Dropout's key and step counter, are in the file: 3
    steps, save, load, 3 steps equal 6 steps in one go."""
    batches = [(rng.normal(size=(5, 3)), rng.normal(size=(5, 2))) for _ in range(6)]
    whole, first = dropout_net(device64), dropout_net(device64)
    for x, y in batches:
        g.train(whole, opt, x, y)
    for x, y in batches[:3]:
        g.train(first, opt, x, y)
    first.save(tmp_path / "half.gnpy")
    resumed = g.Network.load(tmp_path / "half.gnpy")
    assert resumed.steps == 3 and resumed.optimizer_name == opt.kernel
    for x, y in batches[3:]:
        g.train(resumed, opt, x, y)
    for a, b in zip(flat(whole.get_parameters()), flat(resumed.get_parameters()), strict=True):
        np.testing.assert_array_equal(a, b)


def small_net(device):
    return g.Network([g.FullyConnected(3, 4), g.Tanh(), g.FullyConnected(4, 2)], input=g.D1(3),
                     device=device, seed=4)


@pytest.mark.parametrize("per_example", [False, True])
def test_an_optimiser_never_reads_anothers_state(device64, rng, caplog, per_example):
    """SGD after Adam, and Adam after SGD, start the optimiser state (momentum, second moment,
    step counts) from zero, as a new torch optimiser's would, saying so: the network ends where
    one with the same parameters and no state, trained alike, does (SGD reading Adam's first
    moment as its momentum would step uphill). AdamW takes over Adam's moments and t. In
    minibatch steps and in the fused per-example loop."""
    x, y = rng.normal(size=(5, 3)), rng.normal(size=(5, 2))

    def steps(net, opt):
        g.train(net, opt, x, y, per_example=per_example)

    net = small_net(device64)
    for first, then in ((Adam(0.01), SGD(0.05)), (SGD(0.05), Adam(0.01))):
        steps(net, first)
        steps(net, first)
        fresh = small_net(device64)
        fresh.set_parameters(net.get_parameters())
        caplog.clear()
        steps(net, then)
        steps(fresh, then)
        assert f"is {first.kernel}'s, which {then.kernel} cannot use" in caplog.text
        for a, b in zip(flat(net.get_parameters() + net.get_momentum() + net.get_second()),
                        flat(fresh.get_parameters() + fresh.get_momentum() +
                             fresh.get_second()), strict=True):
            np.testing.assert_array_equal(a, b)
        assert (net.steps, net.optimizer_name) == (fresh.steps, then.kernel)
    caplog.clear()
    fresh = small_net(device64)
    fresh.set_parameters(net.get_parameters())
    before = net.steps
    steps(net, AdamW(0.01))
    steps(fresh, AdamW(0.01))
    assert not caplog.text and net.optimizer_name == "adamw"
    assert net.steps == before + fresh.steps  # t goes on, and the moments with it
    assert any(np.any(a != b) for a, b in zip(flat(net.get_parameters()),
                                              flat(fresh.get_parameters()), strict=True))


def test_schedules():
    assert [schedule_rate("exponential:0.9", 0.1, e, 4) for e in range(3)] == \
        pytest.approx([0.1, 0.09, 0.081])
    assert [schedule_rate("step:2:0.5", 1.0, e, 9) for e in range(5)] == [1, 1, 0.5, 0.5, 0.25]
    assert [schedule_rate("cosine", 1.0, e, 4) for e in range(4)] == \
        pytest.approx([1, 0.853553, 0.5, 0.146447], rel=1e-5)
    assert schedule_rate(None, 0.3, 5, 9) == schedule_rate("constant", 0.3, 5, 9) == 0.3
    assert schedule_rate(lambda e: 0.1 / (e + 1), 9.0, 3, 9) == pytest.approx(0.025)
    for bad in ("step:0:0.5", "exponential", "cosine:2", "linear", "step:a:0.5",
                "exponential:0.9x"):
        with pytest.raises(ValueError, match="is not one of"):
            schedule_rate(bad, 0.1, 0, 3)
    with pytest.raises(ValueError, match="rates must be finite and > 0"):
        schedule_rate(lambda e: -1.0, 0.1, 0, 3)


def test_fit_follows_its_schedule_without_rebuilding(device64, rng):
    """fit with a schedule equals one fit per epoch at that epoch's rate."""
    x, y = rng.normal(size=(40, 3)), rng.normal(size=(40, 2))
    a, b = dropout_net(device64), dropout_net(device64)
    history = g.fit(a, Adam(0.01), x, y, batch_size=8, epochs=3, shuffle=False,
                    schedule="exponential:0.5")
    assert [r["rate"] for r in history] == [0.01, 0.005, 0.0025]
    for rate in (0.01, 0.005, 0.0025):
        g.fit(b, Adam(rate), x, y, batch_size=8, epochs=1, shuffle=False)
    for p, q in zip(flat(a.get_parameters()), flat(b.get_parameters()), strict=True):
        np.testing.assert_array_equal(p, q)
    with pytest.raises(ValueError, match="rates must be finite"):
        g.fit(a, Adam(0.01), x, y, epochs=2, schedule=lambda e: 0.0)
    before = a.get_parameters()
    # (0.01 x 1e100^4 overflows a Python float: it was an OverflowError, a CLI's traceback)
    with pytest.raises(ValueError, match="schedule 'exponential:1e100' gives epoch 4 the rate "
                                         "inf; rates must be finite"):
        g.fit(a, Adam(0.01), x, y, epochs=3, schedule="exponential:1e100", first_epoch=2)
    for p, q in zip(flat(before), flat(a.get_parameters()), strict=True):  # nothing trained
        np.testing.assert_array_equal(p, q)


def test_a_step_left_with_a_shard_scale_computes_the_batch_average(device64, rng):
    """A Step used with another scale (as a distributed shard uses 1/global batch) leaves
    nothing behind: back_propagate on the same cached Step still averages over its rows."""
    x, y = rng.normal(size=(4, 3)), rng.normal(size=(4, 2))
    used, fresh = (g.Network([g.FullyConnected(3, 16), g.Tanh(), g.FullyConnected(16, 2)],
                             input=g.D1(3), device=device64, seed=9) for _ in range(2))
    step = execution.steps(used, 4)
    step.input.set(x)
    step.target.set(y)
    step.train(None, scale=1 / 8)
    fresh.set_parameters(used.get_parameters())
    for a, b in zip(flat(g.back_propagate(used, x, y)), flat(g.back_propagate(fresh, x, y)),
                    strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15)


def test_bad_optimisers_are_refused():
    with pytest.raises(ValueError, match="Adam.beta1 must be in"):
        Adam(beta1=1.0)
    with pytest.raises(ValueError, match="AdamW.clip_norm must be > 0"):
        AdamW(clip_norm=0)
    with pytest.raises(ValueError, match="SGD.rate must be > 0"):
        SGD(0)
    with pytest.raises(TypeError, match="expected an optimiser"):
        g.train(circles(g.Device()), 0.1, np.zeros((1, 2)), np.zeros((1, 1)))
    with warnings.catch_warnings():  # a one-line error, no numpy warning (inf x 0)
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="overflows float32"):
            Adam(1e39).check(np.float32)


@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_values_the_device_would_take_as_zero_are_refused(precision):
    """An eps, rate or clip_norm that the device's precision takes as 0 is refused before a
    step (an Adam eps of 1e-40 or 1e-50 in float32 used to give NaN weights wherever a
    gradient was 0: 0 / 0), and so is an Adam eps whose product with sqrt(1 - beta2), the
    kernels' epsilon, is; float64 holds 1e-40, and training with it stays finite."""
    net = g.Network([g.FullyConnected(3, 4), g.Relu(), g.FullyConnected(4, 2)], input=g.D1(3),
                    device=g.Device(precision=precision), seed=1)
    x, y = np.zeros((8, 3)), np.ones((8, 2))
    tiny = [Adam(eps=1e-40), SGD(1e-40), AdamW(clip_norm=1e-40), Adam(eps=1e-37)]
    if precision == "float32":
        for opt in tiny:
            with pytest.raises(ValueError, match="is 0 in float32 on the device"):
                g.train(net, opt, x, y)
        with pytest.raises(ValueError, match=r"eps 2e-38 times sqrt\(1 - beta2\) is 0"):
            Adam(eps=2e-38).check(np.float32)
        Adam(eps=2e-38, beta2=0).check(np.float32)
        with pytest.raises(ValueError, match="schedule 'exponential:1e-20' gives epoch 2 the "
                                             "rate 1e-41: .* is 0 in float32 on the device"):
            g.fit(net, Adam(0.1), x, y, epochs=3, schedule="exponential:1e-20")
    else:
        for opt in tiny:
            g.train(net, opt, x, y)
        assert all(np.isfinite(v).all() for layer in net.get_parameters()
                   for v in layer.values())
