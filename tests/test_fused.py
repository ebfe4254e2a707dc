"""The fused per-example loop against the layer-by-layer path and against numpy."""
from __future__ import annotations

import contextlib
import logging

import numpy as np
import pytest

from grenade_py import (
    D1,
    D2,
    D3,
    Convolution,
    Deconvolution,
    FullyConnected,
    LearningParameters,
    Logit,
    Network,
    Pooling,
    Relu,
    Reshape,
    Softmax,
    Tanh,
    Trivial,
    train,
)
from grenade_py.execution import fused as fused_trainer
from grenade_py.feedforward import feedforward_network, sample
from grenade_py.fused import fused_source, kernels_bits, plan_loop, unrolled
from grenade_py.layers import Concat, Crop, InceptionMini, Pad
from grenade_py.losses import loss_named
from grenade_py.numpy_reference import NumpyNetwork

LP = LearningParameters(rate=0.01, momentum=0.9, l2=0.0005)

# Each activation first, in the middle and last; 1-wide and 257-wide layers.
NETWORKS = {
    "relu-logit-tanh": (3, lambda: [FullyConnected(3, 1), Relu(), FullyConnected(1, 257),
                                    Logit(), FullyConnected(257, 2), Tanh()]),
    "tanh-first": (4, lambda: [Tanh(), FullyConnected(4, 17), Logit(), FullyConnected(17, 1)]),
    "logit-first": (5, lambda: [Logit(), FullyConnected(5, 5), Tanh(), FullyConnected(5, 3),
                                Relu()]),
    "relu-first": (2, lambda: [Relu(), FullyConnected(2, 3), Tanh(), FullyConnected(3, 2),
                               Logit()]),
    # (79 inputs: whole vectors and the rest, in rows of four then three)
    "softmax": (5, lambda: [FullyConnected(5, 79), Relu(), FullyConnected(79, 7), Softmax()]),
    # Strides 2 and 3, overlapping windows (a gather), 2 x 2 windows past a whole vector,
    # windows apart (cells), D2 and D3 inputs, rows of 18 outputs, partial blocks of rows.
    "conv-pool": (D2(9, 11), lambda: [
        Convolution(1, 3, 3, 2, 2, 3), Pooling(2, 2, 1, 1), Relu(), Convolution(3, 5, 2, 2, 1, 1),
        Pooling(2, 2, 2, 2), Reshape(), FullyConnected(5, 2), Logit()]),
    # The convolutions' blocks of vectors: blocks moved back onto planes of 9 x 20, a row
    # stride of 2, a kernel 9 wide (two blocks of its columns), the input delta through the
    # patches and the col2im rows (4 x 8 outputs of 4 x 16 inputs) and (stride 2) through the
    # scatter. Scaled kernels: with Grenade's +-1 this network's descent is chaotic (rounding
    # grows to O(1) in 500 steps).
    "conv-blocks": (D3(11, 22, 2), lambda: [
        Convolution(2, 3, 3, 3, 1, 1, init="scaled"), Relu(),
        Convolution(3, 4, 3, 5, 2, 1, init="scaled"), Tanh(),
        Convolution(4, 2, 1, 9, 1, 1, init="scaled"), Reshape(), FullyConnected(64, 3),
        Logit()]),
    # A same-size convolution after a Pad (InceptionMini's): its input delta through the
    # correlation with dy padded all round, in blocks, on the Pad's 8 x 14 interior alone.
    "conv-padded": (D3(8, 14, 2), lambda: [
        Convolution(2, 3, 1, 1, 1, 1), Tanh(), Pad(1, 1, 1, 1), Convolution(3, 2, 3, 3, 1, 1),
        Reshape(), FullyConnected(2 * 8 * 14, 2), Logit()]),
    # mnist.hs's InceptionMini network in small: Concat (Trivial, nested Concats of Pad and
    # Convolution), Crop; no input delta before its first parameters. Scaled weights (the
    # network's init): with Grenade's +-1 its descent is chaotic.
    "conv-inception": (D2(8, 10), lambda: [
        Reshape(D3(8, 10, 1)), Concat(Trivial(), InceptionMini(1, 2, 3)), Pooling(2, 2, 2, 2),
        Relu(), Concat(Convolution(6, 2, 1, 1, 1, 1), InceptionMini(6, 2, 3)), Crop(1, 1, 1, 1),
        Reshape(), FullyConnected(42, 3), Logit()]),
    # Output rows of 12, 2 of them: the kernel gradient in blocks, the rest column by column.
    "conv-short": (D3(3, 14, 2), lambda: [
        Tanh(), Convolution(2, 3, 2, 3, 1, 1), Reshape(), FullyConnected(72, 2), Logit()]),
    # LeNet in small: a 3 x 3 kernel on 3 x 3 outputs (the padded correlation for its input
    # delta, mostly over the zeros around dy), after pooling.
    "conv-lenet": (D2(12, 12), lambda: [
        Convolution(1, 2, 3, 3, 1, 1), Pooling(2, 2, 2, 2), Relu(), Convolution(2, 3, 3, 3, 1, 1),
        Reshape(), FullyConnected(27, 2), Logit()]),
    # Grenade's GAN generator in small: Deconvolutions of strides 2 and 1 (through their
    # patches: K x put back by col2im; dy's patches copied out for the delta and K's gradient).
    "deconv": (6, lambda: [
        FullyConnected(6, 32), Relu(), Reshape(D3(2, 4, 4)), Deconvolution(4, 3, 3, 3, 2, 2),
        Relu(), Deconvolution(3, 2, 2, 3, 1, 1), Reshape(), FullyConnected(132, 2), Logit()]),
    "conv-wide": (D3(10, 22, 2), lambda: [
        Convolution(2, 3, 3, 5, 1, 1), Pooling(2, 2, 2, 2), Tanh(), Convolution(3, 4, 2, 3, 1, 2),
        Pooling(3, 2, 3, 2), Reshape(), FullyConnected(8, 3), Logit()]),
}


def build(device, name, seed=5):
    shape, layers = NETWORKS[name]
    scaled = name in ("conv-inception", "deconv", "conv-lenet", "conv-padded")
    return Network(layers(), input=D1(shape) if isinstance(shape, int) else shape, device=device,
                   seed=seed, init="scaled" if scaled else "grenade")


def data(net, count, seed=6):
    """Inputs and targets; rows that sum to 1 (cross entropy's) when the network ends in
    Softmax."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(count, *net.input_shape.dims))
    y = rng.uniform(0, 1, size=(count, *net.output_shape.dims))
    if isinstance(net.layers[-1], Softmax):
        y /= y.sum(axis=1, keepdims=True)
    return x, y


def layer_by_layer(monkeypatch):
    monkeypatch.setattr("grenade_py.execution.fused", lambda *args: None)


def assert_same_state(a, b, rtol, scale=1e-3):
    """Parameters and momenta to `rtol`, values near 0 to rtol x `scale` x the array's
    largest. On a device running the tiled GEMMs (a GPU's), layer by layer sums each product in
    another order than the loop: every value compares to rtol x the array's largest, and
    momenta to 100 rtol. A momentum near convergence is a small difference of large terms (a
    saturated Tanh's 1 - y^2, y within an ulp of 1): under Intel's CPU runtime posing as a GPU,
    relu-logit-tanh's float32 momenta differed by 2.8e-3 of their largest after 50 steps (float64:
    1.8e-12 after 2,000), while its parameters stayed within 2e-7 (2e-13)."""
    tiled = a.device.gemm == "tiled"
    parameters = len(a.get_parameters())
    for i, (pa, pb) in enumerate(zip(a.get_parameters() + a.get_momentum(),
                                     b.get_parameters() + b.get_momentum(), strict=True)):
        tol = rtol * (100 if tiled and i >= parameters else 1)
        for name in pa:
            np.testing.assert_allclose(pa[name], pb[name], rtol=tol, err_msg=name,
                                       atol=tol * (1 if tiled else scale) * np.abs(pb[name]).max())


def test_feedforward_fused_equals_layer_by_layer_10k(device64, monkeypatch):
    fused, plain = (feedforward_network(device64, seed=3, init="grenade") for _ in range(2))
    assert fused_trainer(fused) is not None
    xs, ys = sample(10_000, np.random.default_rng(4))
    train(fused, LP, xs, ys, per_example=True)
    layer_by_layer(monkeypatch)
    train(plain, LP, xs, ys, per_example=True)
    assert_same_state(fused, plain, rtol=1e-12)


@pytest.mark.parametrize("name", NETWORKS)
def test_fused_equals_layer_by_layer(device, monkeypatch, name):
    """float64 to 1e-12. float32 to 1e-4: both paths compute the same sums in the same order
    (mostly through the same functions), so they agree to the last bit in practice; the
    tolerance only allows a compiler to contract an expression differently in the two contexts
    (one float32 rounding, 6e-8, per operation, over 2,000 steps of a contracting descent).
    Convolutions are the exception (direct loops against GEMMs: their sums in another order),
    so values near 0 compare to 1e-4 of their array's largest. float32 runs 1,000 steps, 300
    of convolutions: a ReLU input within rounding of 0 can take different sides in the two
    runs, and they part from there (conv-blocks: at example 1,085 of 2,000, 1.1e-7 against
    -5.2e-7; at about 350 once its first convolution's rows of 20 outputs ran as runs of 8 in
    its GEMMs, their differences 1e-6 of the largest weight up to there, 5e-4 after)."""
    fused, plain = build(device, name), build(device, name)
    assert fused_trainer(fused) is not None
    x, y = data(fused, 2000 if device.precision == "float64" else 300 if "conv" in name else 1000)
    train(fused, LP, x, y, per_example=True)
    layer_by_layer(monkeypatch)
    train(plain, LP, x, y, per_example=True)
    assert_same_state(fused, plain, rtol=1e-12 if device.precision == "float64" else 1e-4,
                      scale=1 if "conv" in name else 1e-3)


@pytest.mark.parametrize("loss", ["squared_error", "cross_entropy"])
def test_softmax_in_the_fused_loop_under_both_losses(device, monkeypatch, loss):
    """A network ending in Softmax: under squared error Softmax's backward pass runs in the
    loop; under cross entropy the error p - t enters at the logits, past it. Both equal
    layer by layer (tolerances as above) and, in float64, the numpy transcription."""
    fused, plain = build(device, "softmax"), build(device, "softmax")
    reference = NumpyNetwork([type(layer).__name__ for layer in fused.layers],
                             fused.get_parameters())
    assert fused_trainer(fused, 0, loss_named(loss)) is not None
    x, y = data(fused, 2000)
    train(fused, LP, x, y, per_example=True, loss=loss)
    layer_by_layer(monkeypatch)
    train(plain, LP, x, y, per_example=True, loss=loss)
    assert_same_state(fused, plain, rtol=1e-12 if device.precision == "float64" else 1e-4)
    if device.precision == "float64":
        reference.train_per_example(x, y, LP, loss)
        for got, expected in zip(fused.get_parameters(), reference.parameters, strict=True):
            for name, value in expected.items():
                np.testing.assert_allclose(got[name], value, rtol=1e-9,
                                           atol=1e-9 * np.abs(value).max())
    start = build(device, "softmax").get_parameters()[2]["weights"]
    assert not np.allclose(fused.get_parameters()[2]["weights"], start)  # it trained


@pytest.mark.parametrize("name", ["relu-logit-tanh", "logit-first"])
def test_fused_equals_numpy_grenade(device64, name):
    net = build(device64, name)
    reference = NumpyNetwork([type(layer).__name__ for layer in net.layers],
                             net.get_parameters())
    x, y = data(net, 2000)
    train(net, LP, x, y, per_example=True)
    reference.train_per_example(x, y, LP)
    for got, expected in zip(net.get_parameters(), reference.parameters, strict=True):
        for name_, value in expected.items():  # 1e-9 relative to the array's scale
            np.testing.assert_allclose(got[name_], value, rtol=1e-9,
                                       atol=1e-9 * np.abs(value).max())


@pytest.mark.parametrize("name", ["conv-inception", "conv-blocks", "deconv"])
def test_convolutions_in_the_loop_under_adamw(device64, monkeypatch, name):
    """The convolutions' kernel updates step through the optimiser's rule like every other
    parameter: AdamW's moments and step counts equal layer by layer's."""
    from grenade_py import AdamW

    fused, plain = build(device64, name), build(device64, name)
    x, y = data(fused, 300)
    train(fused, AdamW(0.001), x, y, per_example=True)
    layer_by_layer(monkeypatch)
    train(plain, AdamW(0.001), x, y, per_example=True)
    assert fused.steps == plain.steps == 300
    for pa, pb in zip(fused.get_parameters() + fused.get_second(),
                      plain.get_parameters() + plain.get_second(), strict=True):
        for key in pa:
            np.testing.assert_allclose(pa[key], pb[key], rtol=1e-12,
                                       atol=1e-12 * np.abs(pb[key]).max(), err_msg=key)


def loop_source(net):
    """The fused loop's source for `net` under squared error (it has one)."""
    source = fused_source(plan_loop(*unrolled(net, loss_named("squared_error"))))
    assert source is not None
    return source


def test_no_input_delta_before_the_first_parameters(device64):
    """Deltas nothing reads are not computed: InceptionMini's first block (after a Reshape)
    has no input delta, its second block has."""
    net = build(device64, "conv-inception")
    source = loop_source(net)
    assert "conv_direct_delta_plane(1, " not in source  # the first block's 1 channel
    assert "conv_direct_delta_plane(6, " in source


def test_a_padded_convolution_computes_its_input_delta_on_the_interior(device64):
    """After a Pad, a Convolution's input delta runs only over the blocks that cover the Pad's
    interior (its border is the zeros' delta, which Pad's backward pass drops): 2 x 2 blocks
    of 4 rows x 8 columns (both planes in each) on the 8 x 14 interior here, not the 3 x 3 the
    padded 10 x 18 planes take. Where the outputs are much fewer than the positions the blocks
    cover (LeNet's second layer: 8 x 8 of 12 x 12), the input delta goes through the patches
    K dy and the col2im rows instead. The results equal layer by layer in
    test_fused_equals_layer_by_layer (conv-padded, conv-blocks)."""
    net = Network([Convolution(1, 2, 3, 3, 1, 1), Pad(2, 1, 2, 1), Convolution(2, 3, 3, 5, 1, 1),
                   Reshape(), FullyConnected(3 * 8 * 14, 1)], input=D2(10, 16), device=device64,
                  seed=1)
    source = loop_source(net)
    assert "q < 4; q += nl) conv_direct_delta_block(2, 10, 18, 3, 3, 5, k2, s2, q / 4 * 2, " \
        "1 + q / 2 % 2 * 4, 2 + q % 2 * 8, d2)" in source
    lenet = Network([Convolution(1, 2, 5, 5, 1, 1), Relu(), Convolution(2, 3, 5, 5, 1, 1),
                     Reshape(), FullyConnected(3 * 8 * 8, 1)], input=D2(16, 16), device=device64,
                    seed=1)
    source = loop_source(lenet)
    assert "q < 13; q += nl) gemm_rows_product(k2 + (size_t)q * 12, 3, 1, 3, d3, 64, s2 + " \
        "(size_t)q * 256, 64, min(4, 50 - 4 * q));" in source
    assert "q < 12; q += nl) conv_col2im_rows4(q / 12 * 4, 0 + q % 12, 2, 12, 12, 5, 5, 8, " \
        "8, s2, d2);" in source


class OpaqueRelu(Relu):
    """A Relu without a device-side form, standing in for a layer that has none."""

    def fused_forward(self, i):
        return None


def test_fallback_for_layer_without_device_form(device64, caplog):
    def make(relu):
        return Network([FullyConnected(2, 6), relu(), FullyConnected(6, 1), Logit()],
                       input=D1(2), device=device64, seed=8)

    fused, fallback = make(Relu), make(OpaqueRelu)
    with caplog.at_level(logging.DEBUG, logger="grenade_py"):
        assert fused_trainer(fallback) is None
    assert "layer by layer" in caplog.text and "OpaqueRelu" in caplog.text
    xs, ys = sample(500, np.random.default_rng(9))
    train(fused, LP, xs, ys, per_example=True)
    train(fallback, LP, xs, ys, per_example=True)
    assert_same_state(fused, fallback, rtol=1e-12)


def test_same_seed_same_weights(device):
    xs, ys = sample(3000, np.random.default_rng(10))
    a, b = (feedforward_network(device, seed=12) for _ in range(2))
    train(a, LP, xs, ys, per_example=True)
    train(b, LP, xs, ys, per_example=True)
    for pa, pb in zip(a.get_parameters(), b.get_parameters(), strict=True):
        for name in pa:
            np.testing.assert_array_equal(pa[name], pb[name])


def test_progress_reports_in_chunks(device):
    net = feedforward_network(device, seed=1)
    seen = []
    xs, ys = sample(1000, np.random.default_rng(2))
    train(net, LP, xs, ys, per_example=True, progress=seen.append)
    assert seen[-1] == 1000 and seen == sorted(seen) and len(seen) == 100


@pytest.mark.parametrize(("name", "lanes"), [
    ("relu-logit-tanh", 2), ("relu-logit-tanh", 16), ("relu-logit-tanh", 64), ("conv-pool", 16),
    ("conv-wide", 16), ("conv-blocks", 16), ("conv-inception", 16), ("deconv", 16),
    ("conv-lenet", 16)])
def test_fused_loop_with_many_lanes(device64, monkeypatch, name, lanes):
    """The loop's GPU form (coalesced lanes: groups of lanes per weight row, summed in local
    memory; lanes over consecutive weights in the update; convolutions' and poolings' rows,
    planes and kernel entries shared out), run on the CPU. Its dot products sum in another
    order, so it equals the one-lane form to rounding: every value to rtol x the array's
    largest, as on a GPU (on PoCL values near 0 came within 1e-3 of that; on Intel's CPU
    runtime two weights of 257 at 0.5% of the largest differed by 1.7e-14 x the largest)."""
    monkeypatch.setattr("grenade_py.fused.lanes", lambda device: lanes)
    fused, plain = build(device64, name), build(device64, name)
    assert fused_trainer(fused).launch.local_size == (lanes,)
    x, y = data(fused, 500)
    train(fused, LP, x, y, per_example=True)
    layer_by_layer(monkeypatch)
    train(plain, LP, x, y, per_example=True)
    assert_same_state(fused, plain, rtol=1e-12, scale=1)


@pytest.mark.parametrize("name", ["relu-logit-tanh", "softmax", "branches", "conv-pool"])
def test_run_net_gives_one_sample_by_the_fused_forms(device, monkeypatch, name):
    """Once a network has run FUSED_RUN_AFTER single samples, run_net gives one by one launch
    of its layers' fused forms, with the bits of the layers' kernels; a network with
    convolutions keeps the kernels, as every network on a GPU does (kernels_bits)."""
    from grenade_py import run_net

    net = Network([FullyConnected(3, 4), Concat(Tanh(), Logit()), FullyConnected(8, 2), Relu()],
                  input=D1(3), device=device, seed=2) if name == "branches" else build(device, name)
    x, _ = data(net, 5)
    monkeypatch.setattr("grenade_py.runner.FUSED_RUN_PARAMETERS", 0)
    expected = [run_net(net, sample) for sample in x]  # layer by layer
    monkeypatch.setattr("grenade_py.runner.FUSED_RUN_PARAMETERS", 1 << 20)
    monkeypatch.setattr("grenade_py.runner.FUSED_RUN_AFTER", 2)
    got = [run_net(net, sample) for sample in x]  # from the second on, fused
    assert (net.held["fused run"][1] is None) == (not kernels_bits(net))
    assert kernels_bits(net) == (not net.device.gpu and not name.startswith("conv"))
    for e, g in zip(expected, got, strict=True):
        np.testing.assert_array_equal(e, g)


def test_run_net_gives_the_same_bits_polling_or_blocking(device, monkeypatch):
    """run_net's one-sample loop waits for its result by polling on a CPU of several cores
    (FusedRunner.polls), else by a blocking wait: the same outputs either way."""
    from grenade_py import run_net

    net = build(device, "relu-logit-tanh")
    x, _ = data(net, 6)
    monkeypatch.setattr("grenade_py.runner.FUSED_RUN_AFTER", 1)
    run_net(net, x[0])
    runner = net.held["fused run"][1]
    if runner is None:
        pytest.skip("no one-sample loop on this device (kernels_bits)")
    assert runner.polls == (not device.gpu and device.cl_device.max_compute_units > 1)
    outputs = {}
    for polls in (True, False):
        runner.polls = polls
        outputs[polls] = [run_net(net, sample) for sample in x]
    for a, b in zip(outputs[True], outputs[False], strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(np.array(outputs[True]), run_net(net, x))


def test_run_net_gives_the_same_bits_from_shared_memory_or_copies(device, monkeypatch):
    """Where the device shares memory with the host (fused.shares_memory: fine-grained SVM,
    as PoCL's CPU devices have), run_net's one-sample loop takes its input and gives its
    output there, else through an upload and a read: the same outputs either way (D2 in and
    out: the shared arrays are flat)."""
    from grenade_py import fused, run_net

    net = Network([Reshape(), FullyConnected(6, 6), Tanh(), Reshape(D2(3, 2))], input=D2(2, 3),
                  device=device, seed=3)
    x, _ = data(net, 6)
    monkeypatch.setattr("grenade_py.runner.FUSED_RUN_PARAMETERS", 0)
    expected = np.array([run_net(net, sample) for sample in x])  # layer by layer
    monkeypatch.setattr("grenade_py.runner.FUSED_RUN_PARAMETERS", 1 << 20)
    monkeypatch.setattr("grenade_py.runner.FUSED_RUN_AFTER", 1)
    run_net(net, x[0])
    runner = net.held["fused run"][1]
    if runner is None:
        pytest.skip("no one-sample loop on this device (kernels_bits)")
    assert (runner.shared is not None) == fused.shares_memory(device)
    outputs = {}
    for shares in (True, False) if fused.shares_memory(device) else (False,):
        monkeypatch.setattr(fused, "shares_memory", lambda device, shares=shares: shares)
        net.held["fused run"][1] = fused.fused_runner(net)
        assert (net.held["fused run"][1].shared is None) == (not shares)
        outputs[shares] = np.array([run_net(net, sample) for sample in x])
        assert outputs[shares].shape == (6, 3, 2)
    for got in outputs.values():
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("in_gemm", [False, True])
@pytest.mark.parametrize("name", ["relu-logit-tanh", "softmax", "branches", "conv-pool"])
def test_train_on_one_example_by_the_fused_loop(device, monkeypatch, name, in_gemm):
    """Once a network has trained FUSED_RUN_AFTER single examples, train on one example runs
    one launch of the fused per-example loop, with the bits of the one-row Step's kernels, under
    SGD and Adam and both losses; a network with convolutions keeps the kernels, as every
    network on a GPU does (kernels_bits). `in_gemm`: the one-row Step steps the weights of
    FullyConnected layers of VW inputs or more in their gradient's gemm_outer_update (as it does
    from UPDATE_FUSED weights on), as the fused loop's update does one weight at a time."""
    from grenade_py import Adam, runner
    from grenade_py.layers import fully_connected

    if in_gemm:
        monkeypatch.setattr(fully_connected, "UPDATE_FUSED", 0)

    def make():
        if name == "branches":
            return Network([FullyConnected(3, 4), Concat(Tanh(), Logit()), FullyConnected(8, 2),
                             Relu()], input=D1(3), device=device, seed=2)
        return build(device, name)

    loss = "cross_entropy" if name == "softmax" else "squared_error"
    kernels, looped = make(), make()
    x, y = data(kernels, 30)
    for net, after in ((kernels, 10**9), (looped, 2)):
        monkeypatch.setattr(runner, "FUSED_RUN_AFTER", after)
        for optimizer in (LP, Adam(0.01)):
            for one, target in zip(x, y, strict=True):
                train(net, optimizer, one, target, loss=loss)
    assert looped.held["fused train"][1] == kernels_bits(looped)
    if name in ("relu-logit-tanh", "softmax"):  # layers of 257 and 79 inputs
        assert bool(kernels.update_fused(len(kernels.layers), 1)) == in_gemm
    assert kernels.steps == looped.steps == 30  # Adam's, from its first step
    for role in ("get_parameters", "get_momentum", "get_second"):
        for a, b in zip(getattr(kernels, role)(), getattr(looped, role)(), strict=True):
            for key in a:
                np.testing.assert_array_equal(a[key], b[key], err_msg=f"{role} {key}")
    trained, start = kernels.get_parameters(), make().get_parameters()
    assert not any(np.array_equal(a[key], b[key]) for a, b in zip(trained, start, strict=True)
                   for key in a)  # every array trained


def test_the_held_loop_lets_go_of_the_data(device, monkeypatch):
    """The fused per-example loop is held on the network from call to call; once
    train(per_example=True) or fit(batch_size=1) returns, its arguments hold none of the call's
    data (the examples on the device, fit's order), so a dataset is freed with its call; also
    when the call ends in an error (a callback's here; Ctrl-C's is another), which left them
    held until the network's next such call."""
    import pyopencl.array as cl_array

    from grenade_py import execution, fit

    made = []
    upload = device.to_device
    monkeypatch.setattr(device, "to_device",
                        lambda array, *rest: made.append(upload(array, *rest)) or made[-1])

    def fails(*args):
        raise KeyError("stopped")

    for run in (lambda net, x, y: train(net, LP, x, y, per_example=True),
                lambda net, x, y: fit(net, LP, x, y, batch_size=1, epochs=2, seed=1),
                lambda net, x, y: train(net, LP, x, y, per_example=True, progress=fails),
                lambda net, x, y: fit(net, LP, x, y, batch_size=1, epochs=2, on_epoch=fails),
                lambda net, x, y: fit(net, LP, x, y, batch_size=1, progress=fails)):
        net = build(device, "relu-logit-tanh")
        x, y = data(net, 50)
        made.clear()
        with contextlib.suppress(KeyError):
            run(net, x, y)
        assert len(made) >= 2  # the examples went to the device...
        trainer = execution.steps(net, 1).fused(LP)
        assert trainer is not None
        held = [a for a in trainer.launch.args if isinstance(a, cl_array.Array)]
        assert not any(a is m for a in held for m in made)  # ...and the loop let go of them
        assert not any(a.dtype == np.int32 for a in held)  # fit's order too
