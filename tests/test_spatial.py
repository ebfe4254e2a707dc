"""Grenade's spatial layers — Convolution, Deconvolution, Pooling, Pad, Crop, Reshape, Elu —
against PyTorch (float64, odd sizes, strides > 1, kernels that are not square, overlapping
pooling, batches of 1 and 7) and finite differences; exact-fit shape errors; model files."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import numeric_gradients

from grenade_py import (
    D1,
    D2,
    D3,
    Concat,
    Convolution,
    Crop,
    Deconvolution,
    Elu,
    FullyConnected,
    Logit,
    Network,
    Pad,
    Pooling,
    Relu,
    Reshape,
    ShapeError,
    Tanh,
    Trivial,
    back_propagate,
    run_gradient,
    run_net,
    run_network,
)

try:
    import torch
    F = torch.nn.functional
except ImportError:  # only the torch comparisons need it
    torch = None
needs_torch = pytest.mark.skipif(torch is None,
                                 reason="PyTorch is the oracle here (pip install '.[test]')")


def torch_layer(layer, x, p):
    """`layer` applied to the torch batch x (N, C, H, W) or (N, features), with its parameters
    p (torch tensors); the transcription of each layer's documented maths."""
    kind = type(layer).__name__
    if kind in ("Concat", "Series"):  # (branch a's channels first)
        children = [("a", layer.a), ("b", layer.b)] if kind == "Concat" else list(
            enumerate(layer.layers))
        outs = []
        for key, child in children:
            mine = {k[len(f"{key}."):]: v for k, v in p.items() if k.startswith(f"{key}.")}
            outs.append(torch_layer(child, x if kind == "Concat" or not outs else outs[-1],
                                    mine))
        return torch.cat(outs, dim=1) if kind == "Concat" else outs[-1]
    if kind == "Convolution":
        w = p["kernel"].T.reshape(layer.filters, layer.channels, layer.kh, layer.kw)
        return F.conv2d(x, w, stride=(layer.sh, layer.sw))
    if kind == "Deconvolution":
        w = p["kernel"].T.reshape(layer.channels, layer.filters, layer.kh, layer.kw)
        return F.conv_transpose2d(x, w, stride=(layer.sh, layer.sw))
    if kind == "Pooling":
        return F.max_pool2d(x, (layer.kh, layer.kw), (layer.sh, layer.sw))
    if kind == "Pad":
        return F.pad(x, (layer.left, layer.right, layer.top, layer.bottom))
    if kind == "Crop":
        return x[..., layer.top:x.shape[-2] - layer.bottom, layer.left:x.shape[-1] - layer.right]
    if kind == "Reshape":
        target = layer.target
        return x.reshape(len(x), *((1, *target.dims) if isinstance(target, D2) else target.dims))
    if kind == "FullyConnected":
        return x @ p["weights"].T + p["bias"]
    return {"Elu": F.elu, "Relu": torch.relu, "Tanh": torch.tanh,
            "Logit": torch.sigmoid, "Trivial": lambda v: v}[kind](x)


def as_planes(shape, x):
    """A D2 batch as one-channel planes, for torch."""
    return x[:, None] if isinstance(shape, D2) else x


def torch_check(net, x, y):
    """run_net and back_propagate of `net` equal autograd through the torch transcription."""
    params = [{k: torch.tensor(v, requires_grad=True) for k, v in p.items()}
              for p in net.get_parameters()]
    out = as_planes(net.input_shape, torch.tensor(x))  # D2 as one channel throughout
    for layer, p in zip(net.layers, params, strict=True):
        out = torch_layer(layer, out, p)
    out = out.reshape(len(x), *net.output_shape.dims)
    np.testing.assert_allclose(run_net(net, x), out.detach().numpy(), rtol=1e-11, atol=1e-12)
    (0.5 * ((out - torch.tensor(y)) ** 2).sum() / len(x)).backward()
    for got, p in zip(back_propagate(net, x, y), params, strict=True):
        for name, value in p.items():
            np.testing.assert_allclose(got[name], value.grad.numpy(), rtol=1e-10, atol=1e-12,
                                       err_msg=name)


NETWORKS = {
    # a deconvolution between two layers with parameters: its input delta is checked too
    "conv-deconv": (D3(7, 6, 2), lambda: [
        Convolution(2, 3, 3, 2, 2, 2), Tanh(), Deconvolution(3, 2, 3, 2, 2, 2), Elu(),
        Convolution(2, 1, 1, 1, 1, 1)]),
    "d2-one-filter": (D2(9, 8), lambda: [
        Convolution(1, 1, 3, 2, 3, 2), Relu(), Pad(2, 1, 0, 3), Convolution(1, 4, 2, 2, 1, 1)]),
    "overlapping-pool": (D3(9, 7, 3), lambda: [
        Convolution(3, 5, 3, 3, 1, 1), Pooling(3, 2, 2, 1), Logit(), Crop(1, 0, 1, 1),
        Convolution(5, 2, 1, 2, 1, 1)]),
    "spaced-pool": (D3(8, 12, 2), lambda: [  # stride > kernel: inputs no window covers
        Convolution(2, 3, 1, 2, 1, 1), Pooling(2, 2, 3, 3), Elu(), Convolution(3, 2, 2, 2, 1, 1)]),
    "row-stride": (D3(9, 7, 2), lambda: [  # stride 2 down the rows, 1 along them
        Convolution(2, 3, 3, 2, 2, 1), Tanh(), Deconvolution(3, 2, 3, 2, 2, 1), Elu()]),
    "wide-rows": (D2(3, 70), lambda: [  # the second convolution's rows pass 64: col2im in place
        Convolution(1, 2, 2, 3, 1, 1), Tanh(), Convolution(2, 1, 1, 3, 1, 1)]),
    "lenet-like": (D2(12, 12), lambda: [
        Convolution(1, 4, 3, 3, 1, 1), Pooling(2, 2, 2, 2), Relu(), Convolution(4, 3, 3, 3, 1, 1),
        Reshape(), FullyConnected(27, 5), Logit()]),
    # Convolution.planes by the transposed convolution's shape: a Deconvolution of 9 inputs
    # (that convolution's filters: a vector and one more in float64) takes the planes forms
    # backwards, after a Convolution of 9 filters over rows of 4 that takes them too; one of 2
    # inputs and 9 outputs does not
    "deconv-planes": (D3(5, 5, 2), lambda: [
        Convolution(2, 9, 2, 2, 1, 1), Tanh(), Deconvolution(9, 3, 3, 3, 2, 2), Elu()]),
    "deconv-few-inputs": (D3(4, 4, 1), lambda: [
        Convolution(1, 2, 2, 2, 1, 1), Tanh(), Deconvolution(2, 9, 2, 2, 1, 1), Tanh()]),
    # a Deconvolution whose forward pass is conv_scatter_delta over rows of 14 (not whole runs
    # of 8), from its input laid out on the grid of runs
    "deconv-ragged": (D3(5, 16, 2), lambda: [
        Convolution(2, 3, 2, 3, 1, 1), Tanh(), Deconvolution(3, 2, 2, 3, 1, 1), Elu()]),
    # a Convolution of 7 channels whose input delta, and a Deconvolution of 6 outputs whose
    # forward pass, are the turned convolution's forward pass over rows of 15
    "turned": (D3(4, 19, 2), lambda: [
        Convolution(2, 7, 1, 3, 1, 1), Tanh(), Convolution(7, 3, 2, 3, 1, 1), Elu(),
        Deconvolution(3, 6, 2, 3, 1, 1), Tanh()]),
    # the same after a Pad, whose input's delta it gives (the Pad's backward pass left out):
    # padding under the kernel's size less one (top), and over it (left, bottom: dy cut)
    "pad-turned": (D3(5, 12, 2), lambda: [
        Convolution(2, 6, 1, 2, 1, 1), Tanh(), Pad(4, 1, 0, 3), Convolution(6, 3, 3, 4, 1, 1),
        Elu()]),
    # Concats of convolutions that write their outputs into the Concat's rows, and read their
    # deltas there (`joins_rows`), as in Grenade's mnist.hs: first in the network (kernel
    # gradients alone) beside a Trivial, then with input deltas by the turned convolution
    # (beside one after a Pad, which gives the Pad's input's delta)
    "concat-rows": (D3(3, 14, 1), lambda: [
        Concat(Trivial(), Concat([Pad(1, 1, 1, 1), Convolution(1, 2, 3, 3, 1, 1)],
                                 [Pad(2, 2, 2, 2), Convolution(1, 3, 5, 5, 1, 1)])), Relu(),
        Concat(Convolution(6, 2, 1, 1, 1, 1), [Pad(1, 1, 1, 1), Convolution(6, 3, 3, 3, 1, 1)]),
        Tanh()]),
    # input deltas by conv_scatter_delta (2 channels, rows of 14) beside a branch of its own
    # buffers (ending in a Tanh)
    "concat-rows-scatter": (D3(2, 15, 2), lambda: [
        Tanh(), Concat([Pad(1, 0, 0, 0), Convolution(2, 3, 1, 3, 1, 1)],
                       [Convolution(2, 2, 1, 2, 1, 1), Tanh()]), Elu()]),
}


@needs_torch
@pytest.mark.parametrize("name", NETWORKS)
@pytest.mark.parametrize("n", [1, 7])
def test_spatial_layers_against_torch(device64, name, n):
    shape, layers = NETWORKS[name]
    net = Network(layers(), input=shape, device=device64, seed=3, init="grenade")
    rng = np.random.default_rng(n)
    x = rng.normal(size=(n, *shape.dims))
    torch_check(net, x, rng.normal(size=(n, *net.output_shape.dims)))


def test_a_deconvolution_takes_the_planes_forms_by_its_transposed_shape(device64):
    """The planes forms need the transposed convolution's filters (a Deconvolution's inputs) to
    fill a vector: "deconv-planes" takes them, "deconv-few-inputs" (2 inputs, 9 outputs) not."""
    takes = {name: [layer.planes() for layer in Network(
        NETWORKS[name][1](), input=NETWORKS[name][0], device=device64).layers
        if isinstance(layer, Convolution)] for name in ("deconv-planes", "deconv-few-inputs")}
    assert takes == {"deconv-planes": [True, True], "deconv-few-inputs": [False, False]}


def test_part_empty_vectors_of_filters_take_the_planes_forms_only_over_copied_patches(device):
    """With fewer filters than a vector (VW / 2 or more), a convolution takes the planes forms
    where its patches would be copied out (output rows under 8), not where the implicit GEMMs
    run over rows that are not whole runs of 8; those take them from a whole vector on."""
    from grenade_py.gemm import vector_width
    if device.gemm != "registers":
        pytest.skip("the planes forms are the register-blocked GEMMs' (CPUs)")
    vw = vector_width(device)

    def takes(h: int, filters: int) -> tuple[bool, bool]:
        layer = Network([Convolution(8, filters, 3, 3, 1, 1)], input=D3(h, h, 8),
                        device=device).layers[0]
        return layer.implicit(), layer.planes()

    # rows of 14 (ragged, 72 patch entries) and rows of 5 (patches copied out)
    assert takes(16, vw // 2) == takes(16, vw - 1) == (True, False)
    assert takes(16, vw) == (True, True)
    assert takes(7, vw // 2) == (False, True)


def test_the_input_delta_is_the_turned_convolution_from_six_channels_over_ragged_rows(
        device):
    """Convolution.flips: stride 1, rows of 8 or more that are not whole runs of 8, and
    FLIP_CHANNELS input channels or more (a Deconvolution's outputs); "turned" takes it twice,
    "pad-turned" once, in place of its Pad's backward pass."""
    from grenade_py.layers.convolution import FLIP_CHANNELS
    if device.gemm != "registers":
        pytest.skip("the turned convolution is the register-blocked GEMMs' (CPUs)")

    def flips(channels: int, cols: int, stride: int = 1) -> bool:
        return Network([Convolution(channels, 3, 3, 3, stride, 1)], input=D3(
            3 + 4 * stride, cols, channels), device=device).layers[0].flips()

    assert flips(FLIP_CHANNELS, 16) and flips(FLIP_CHANNELS, 11)  # rows of 14 and 9
    assert not flips(FLIP_CHANNELS - 1, 16)  # too few channels
    assert not flips(FLIP_CHANNELS, 18) and not flips(FLIP_CHANNELS, 9)  # 16: runs; 7: no runs
    assert not flips(FLIP_CHANNELS, 16, stride=2)
    # dy padded all round, of 2^24 values or more a sample (offsets inexact in float32)
    assert not Network([Convolution(FLIP_CHANNELS, 256, 3, 3, 1, 1)], input=D3(
        254, 254, FLIP_CHANNELS), device=device).layers[0].flips()
    assert Network([Convolution(FLIP_CHANNELS, 255, 3, 3, 1, 1)], input=D3(
        254, 254, FLIP_CHANNELS), device=device).layers[0].flips()
    net = Network(NETWORKS["turned"][1](), input=NETWORKS["turned"][0], device=device)
    assert [layer.flips() for layer in net.layers if isinstance(layer, Convolution)] == [
        False, True, True]
    # after a Pad, the Convolution gives the Pad's input's delta: one shift_planes backwards,
    # the turned convolution's padding of dy, none of the Pad's
    from grenade_py.execution import Step
    net = Network(NETWORKS["pad-turned"][1](), input=NETWORKS["pad-turned"][0], device=device)
    names = [launch.kernel.function_name for launch in Step(net, 3).backward_launches()]
    assert net.layers[3].flips() and names.count("shift_planes") == 1


def test_convolutions_write_into_a_concats_rows(device):
    """A Concat's branch ending in a Convolution that `joins_rows` has no output or delta
    buffers of its own: no concat_rows or split_rows copies them ("concat-rows": only the
    Trivial's input is copied in; "concat-rows-scatter": only the Tanh branch's output and
    delta are copied)."""
    from grenade_py import execution
    if device.gemm != "registers":
        pytest.skip("the turned convolution and the scatter are the register-blocked GEMMs'")
    for name, joins, copies in (("concat-rows", [True] * 4, (1, 0)),
                                ("concat-rows-scatter", [True, False], (1, 1))):
        shape, layers = NETWORKS[name]
        net = Network(layers(), input=shape, device=device)
        branches = [(path, key, branch) for path, layer, _ in net.nodes(shape)
                    if isinstance(layer, Concat) for key, branch in (("a", layer.a),
                                                                     ("b", layer.b))
                    if not isinstance(branch, Concat) and branch.label() != "Trivial"]
        assert [branch.joins_rows() for *_, branch in branches] == joins, name
        step = execution.steps(net, 3)
        assert all((f"{path}.y{key}" in step.buffers) != branch.joins_rows()
                   for path, key, branch in branches)
        names = [launch.kernel.function_name for launch in
                 step.forward_launches(True) + step.backward_launches()]
        assert (names.count("concat_rows"), names.count("split_rows")) == copies, name


@pytest.mark.parametrize("name", NETWORKS)
def test_spatial_backward_against_finite_differences(device64, name):
    shape, layers = NETWORKS[name]
    net = Network(layers(), input=shape, device=device64, seed=4)
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(2, *shape.dims)), rng.normal(size=(2, *net.output_shape.dims))
    grads = back_propagate(net, x, y)
    numeric = numeric_gradients(net, lambda m: 0.5 * np.sum((run_net(m, x) - y) ** 2) / 2)
    for got, want in zip(grads, numeric, strict=True):
        for key in want:
            np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-7, err_msg=key)


def test_pooling_ties_go_to_the_first_greatest(device64):
    net = Network([Pooling(2, 2, 1, 1)], input=D2(2, 3), device=device64)
    x = np.array([[[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]]])
    np.testing.assert_array_equal(run_net(net, x), [[[1.0, 1.0]]])
    from grenade_py import execution

    plan = execution.steps(net, 1)
    plan.input.set(x)
    plan.delta.set(np.array([[[10.0, 100.0]]]))
    dx = device64.zeros((1, 2, 3))
    for launch in plan.forward_launches(True) + net.backward(
            1, plan.input, plan.output, plan.delta, dx, plan.buffers):
        launch()
    # window 0 picks (0, 0); window 1 picks (0, 1), its first greatest
    np.testing.assert_array_equal(dx.get(), [[[10.0, 100.0, 0.0], [0.0, 0.0, 0.0]]])


@pytest.mark.parametrize("layers, shape, message", [
    ([Convolution(1, 2, 5, 5, 2, 2)], D2(28, 28), "needs \\(out - 1\\) \\* 2 = rows - 5"),
    ([Pooling(2, 2, 2, 2)], D3(5, 4, 1), "rows = 5 gives none"),
    ([Convolution(3, 2, 1, 1, 1, 1)], D3(4, 4, 2), "takes 3 channels"),
    ([Reshape(D3(5, 5, 2))], D2(5, 10), "only with one channel"),
    ([Reshape()], D2(5, 10), "give it"),
    ([Crop(3, 0, 3, 0)], D2(4, 6), "cuts 0 rows and 6 columns"),
])
def test_exact_fit_shape_errors(device, layers, shape, message):
    with pytest.raises(ShapeError, match=message):
        Network(layers, input=shape, device=device)


def test_every_spatial_layer_in_a_model_file(device64, tmp_path):
    for name, (shape, layers) in NETWORKS.items():
        net = Network(layers(), input=shape, device=device64, seed=6)
        net.save(tmp_path / name)
        loaded = Network.load(tmp_path / name, device=device64)
        assert loaded.spec() == net.spec()
        x = np.random.default_rng(7).normal(size=(3, *shape.dims))
        np.testing.assert_array_equal(run_net(loaded, x), run_net(net, x))


def test_reshape_infers_from_the_next_layer(device):
    net = Network([Reshape(), FullyConnected(12, 2)], input=D3(2, 3, 2), device=device)
    assert net.shapes[1] == D1(12)
    back = Network([FullyConnected(4, 6), Reshape(D3(2, 3, 1)), Convolution(1, 2, 2, 2, 1, 1)],
                   input=D1(4), device=device)
    assert back.output_shape == D3(1, 2, 2)


def test_inception_blocks_and_resnet(device64):
    from grenade_py import Inception, InceptionMini, Resnet

    net = Network([Inception(2, 3, 4, 5), Resnet([Pad(1, 1, 1, 1), Convolution(12, 12, 3, 3, 1,
                                                                                 1)]),
                   InceptionMini(12, 1, 2)], input=D3(6, 5, 2), device=device64, seed=1)
    assert net.shapes[1:] == [D3(6, 5, 12), D3(6, 5, 12), D3(6, 5, 3)]
    rng = np.random.default_rng(8)
    torch_free = rng.normal(size=(2, 2, 6, 5)), rng.normal(size=(2, 3, 6, 5))
    grads = back_propagate(net, *torch_free)
    numeric = numeric_gradients(net, lambda m: 0.5 * np.sum(
        (run_net(m, torch_free[0]) - torch_free[1]) ** 2) / 2)
    for got, want in zip(grads, numeric, strict=True):
        for key in want:
            np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-7, err_msg=key)


@pytest.mark.parametrize("out_cols", [1, 3, 4, 5, 12])
def test_two_by_two_pooling_kernels_against_numpy(device, out_cols):
    """The hand-vectorised 2 x 2 / stride 2 kernels (4 outputs per lane, scalar tails) on
    values with many ties: the first greatest in row-major window order, and dx = dy there."""
    rng = np.random.default_rng(out_cols)
    n, c, out_rows = 3, 2, 3
    net = Network([Pooling(2, 2, 2, 2)], input=D3(2 * out_rows, 2 * out_cols, c),
                  device=device)
    x = rng.integers(0, 3, size=(n, c, 2 * out_rows, 2 * out_cols)).astype(np.float64)
    windows = x.reshape(n, c, out_rows, 2, out_cols, 2).transpose(0, 1, 2, 4, 3, 5).reshape(
        n, c, out_rows, out_cols, 4)
    picked = windows.argmax(axis=-1)  # numpy: the first greatest
    tapes, y = run_network(net, x)
    np.testing.assert_array_equal(y, windows.max(axis=-1))
    dy = rng.normal(size=y.shape)
    _, dx = run_gradient(net, tapes, dy)
    want = np.zeros_like(windows)
    np.put_along_axis(want, picked[..., None], dy[..., None], axis=-1)
    want = want.reshape(n, c, out_rows, out_cols, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(
        x.shape)
    np.testing.assert_allclose(dx, want, rtol=1e-6)


@pytest.mark.parametrize("geometry", [  # (kh, kw, sh, sw), planes (rows, cols)
    ((3, 3, 3, 3), (12, 12)), ((3, 2, 3, 2), (9, 18)), ((2, 2, 3, 3), (8, 11)),  # rows, cols left
    ((1, 3, 2, 3), (5, 3)), ((3, 3, 1, 1), (5, 7)), ((2, 3, 1, 2), (3, 9)), ((1, 1, 1, 1), (1, 1))])
def test_pooling_kernels_against_numpy(device, geometry):
    """pool_forward, pool_backward_cells (windows apart, with inputs past the last window and
    between windows) and pool_backward (overlapping) on values with many ties: the first
    greatest in row-major window order picked, dy added into each input for every window that
    picked it, 0 elsewhere."""
    (kh, kw, sh, sw), (rows, cols) = geometry
    rng = np.random.default_rng(rows * cols)
    n, c = 3, 2
    net = Network([Pooling(kh, kw, sh, sw)], input=D3(rows, cols, c), device=device)
    out_rows, out_cols = (rows - kh) // sh + 1, (cols - kw) // sw + 1
    x = rng.integers(0, 3, size=(n, c, rows, cols)).astype(np.float64)
    tapes, y = run_network(net, x)
    dy = rng.normal(size=y.shape)
    want_y, want_dx = np.empty(y.shape), np.zeros(x.shape)
    for i, j in np.ndindex(out_rows, out_cols):
        window = x[..., i * sh:i * sh + kh, j * sw:j * sw + kw].reshape(n, c, -1)
        want_y[..., i, j] = window.max(axis=-1)
        a, b = np.divmod(window.argmax(axis=-1), kw)  # numpy: the first greatest
        for s, q in np.ndindex(n, c):
            want_dx[s, q, i * sh + a[s, q], j * sw + b[s, q]] += dy[s, q, i, j]
    np.testing.assert_array_equal(y, want_y)
    tapes.step.deltas[0].fill(np.nan)  # every input's delta is written, zeros too
    _, dx = run_gradient(net, tapes, dy)
    np.testing.assert_allclose(dx, want_dx, rtol=1e-6, atol=1e-12)


def test_convolution_size_limit_comes_before_any_allocation(device, monkeypatch):
    net = Network([Convolution(1, 1, 1, 1, 1, 1)], input=D2(4100, 4100), device=device)

    def allocate(*args):
        raise AssertionError("a buffer was allocated before the size check")

    monkeypatch.setattr(type(device), "zeros", allocate)
    with pytest.raises(ShapeError, match="under 2\\^24 values"):
        run_net(net, np.zeros((1, 4100, 4100)))


def test_a_reshape_between_layers_shares_its_input_buffer(device64, monkeypatch):
    """A Reshape between two layers' own boundaries launches nothing: its output is its
    input's buffer (Series.base), two in a row too; as the first layer, or one of the last
    two (whose boundaries take a loss's delta: cross entropy's at the logits), it copies.
    Training and running give the bits of copies everywhere."""
    from grenade_py import SGD, Softmax, execution, fit
    from grenade_py.layers.series import Series

    def networks() -> list[Network]:
        return [Network([Reshape(), FullyConnected(42, 12), Tanh(), Reshape(D3(3, 4, 1)),
                         Reshape(D2(3, 4)), Convolution(1, 2, 2, 2, 1, 1), Reshape(),
                         FullyConnected(12, 3), Logit()], input=D2(6, 7), device=device64,
                        seed=1),
                Network([FullyConnected(4, 6), Reshape(D2(2, 3)), Reshape(D1(6)), Softmax()],
                        input=D1(4), device=device64, seed=2)]

    def train(nets: list[Network]) -> list[object]:
        rng = np.random.default_rng(3)
        out = []
        for net, loss in zip(nets, ("squared_error", "cross_entropy"), strict=True):
            x = rng.normal(size=(10, *net.input_shape.dims))
            y = rng.uniform(size=(10, *net.output_shape.dims))
            y /= y.sum(axis=1, keepdims=True)
            step = execution.steps(net, 5, loss)
            out.append(len(step.forward_launches(True) + step.backward_launches()))
            fit(net, SGD(0.1), x, y, batch_size=5, epochs=3, seed=4, loss=loss)
            out += [net.get_parameters(), back_propagate(net, x, y, loss=loss), run_net(net, x)]
        return out

    shared = networks()
    assert [[net.base(k) for k in range(len(net.layers) + 1)] for net in shared] == [
        [0, 1, 2, 3, 3, 3, 6, 6, 8, 9], [0, 1, 1, 3, 4]]
    got = train(shared)
    monkeypatch.setattr(Series, "base", lambda self, k: k)
    want = train(networks())
    assert (got[0], got[4]) == (want[0] - 3 * 2, want[4] - 2)  # forward and backward copies
    for a, b in zip(got[1:4] + got[5:], want[1:4] + want[5:], strict=True):
        for x, y in zip(*(v if isinstance(v, list) else [v] for v in (a, b)), strict=True):
            if isinstance(x, dict):
                for key in x:
                    np.testing.assert_array_equal(x[key], y[key], err_msg=key)
            else:
                np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("first", ["implicit", "planes"])
def test_a_first_convolution_keeps_no_patches_for_an_input_delta_it_never_computes(
        device, first):
    """A training Step's lowest layer with parameters computes no input delta, so a
    Convolution there whose forward pass and kernel gradient read no patches (implicit GEMMs
    over ragged rows, or the planes forms) holds no patches buffer: only run_network's Steps,
    which give the input's delta, do. The weights train to the same bits either way, and the
    second convolution, whose input delta runs, keeps its own."""
    from grenade_py import SGD, execution

    h, c = (11, 2) if first == "implicit" else (7, 16)  # rows of 9; planes under a vector

    def network() -> Network:
        return Network([Convolution(c, 16, 3, 3, 1, 1), Relu(), Convolution(16, 8, 3, 3, 1, 1),
                        Reshape(), FullyConnected(8 * (h - 4) ** 2, 3)],
                       input=D3(h, h, c), device=device, seed=1)

    lean, full = network(), network()
    layer = lean.layers[0]
    assert layer.implicit() == (first == "implicit") and (layer.implicit() or layer.planes())
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(6, c, h, h)), rng.normal(size=(6, 3))
    steps = [execution.steps(lean, 6), execution.Step(full, 6, input_delta=True)]
    assert "0.patches" not in steps[0].buffers and "0.patches" in steps[1].buffers
    assert "2.patches" in steps[0].buffers or lean.layers[2].scatters()
    assert steps[0].nbytes < steps[1].nbytes - steps[1].buffers["d0"].nbytes
    for step in steps:
        for _ in range(3):
            step.input.set(x.astype(device.dtype))
            step.target.set(y.astype(device.dtype))
            step.train(SGD(0.05))
    for ours, theirs in zip(lean.get_parameters(), full.get_parameters(), strict=True):
        for key in ours:
            np.testing.assert_array_equal(ours[key], theirs[key], err_msg=key)
