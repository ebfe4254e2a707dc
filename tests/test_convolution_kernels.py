"""The convolution's kernels against numpy, through the layer's own launches, in float32 and
float64, at batches 1, 3 and 17 and at shapes that reach every path: runs of 8 columns (stride
1, output rows of 8 or more, including a last half vector and rows whose last run is moved
back), one load per lane (rows of fewer than 8, column strides), filters and patch entries past
the register blocks, rows wider than a vector, planes of fewer positions than a vector
(`Convolution.short_planes`)."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import tolerance

from grenade_py import D3, Convolution, Network, blocks
from grenade_py.device import Device
from grenade_py.execution import enqueue
from grenade_py.gemm import gemm_outer, vector_width
from grenade_py.layers.convolution import COL2IM_CHANNELS, SCATTER_ROWS

# channels, rows, cols, filters, kernel rows, kernel cols, stride rows, stride cols
SHAPES = {
    "lenet-1": (1, 28, 28, 10, 5, 5, 1, 1),       # runs, 576 positions: whole vectors
    "lenet-2": (10, 12, 12, 16, 5, 5, 1, 1),      # runs, 64 positions
    "half-vector": (3, 13, 12, 17, 3, 5, 1, 1),   # runs, 88 positions: 88 % 16 = 8
    "one-by-one": (1, 3, 3, 1, 1, 1, 1, 1),       # 9 positions, one of everything
    "strided": (2, 17, 19, 33, 2, 3, 3, 2),       # lanes gathered, both strides
    "row-stride": (2, 9, 7, 3, 3, 2, 2, 1),       # lanes gathered, stride down the rows only
    "wide": (2, 4, 40, 5, 2, 3, 1, 1),            # runs, 38 columns: the last moved back
    "ragged": (3, 7, 13, 9, 3, 3, 1, 1),          # runs, rows of 11: one moved back each
    "nine": (2, 3, 12, 5, 3, 4, 1, 1),            # runs, one row of 9, 9 positions
    "fourteen": (5, 9, 16, 10, 3, 3, 1, 1),       # runs, rows of 14: the scatter on the grid
    "ragged-strided": (2, 11, 14, 6, 3, 3, 2, 1), # runs, rows of 12 two input rows apart
    "small-plane": (5, 3, 4, 7, 2, 2, 1, 1),      # 6 positions: patches entry-major, one dK
    "planes": (5, 7, 6, 19, 3, 2, 1, 1),          # rows of 5, 19 filters: conv_forward_planes
    "planes-short": (4, 4, 5, 17, 2, 3, 1, 1),    # 9 positions, 17 filters: the same
    "ragged-planes": (8, 5, 12, 17, 3, 3, 1, 1),  # runs, rows of 10, 72 entries: planes too
    "turned": (7, 6, 19, 9, 3, 5, 1, 1),          # runs, rows of 15, 7 channels: dx turned
    "few-filters": (3, 6, 6, 9, 3, 3, 1, 1),      # 9 filters: one part-empty vector (float32)
    "fewer-filters": (3, 6, 7, 5, 2, 3, 2, 1),    # 5 filters: the same in float64, row stride 2
}


def patches(x: np.ndarray, kh: int, kw: int, sh: int, sw: int) -> np.ndarray:
    """(n, C kh kw, OH OW): entry (c kh + a) kw + b of output (i, j) is x[c, i sh + a, j sw + b]."""
    n, c, h, w = x.shape
    oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
    out = np.empty((n, c, kh, kw, oh, ow))
    for a in range(kh):
        for b in range(kw):
            out[:, :, a, b] = x[:, :, a:a + sh * (oh - 1) + 1:sh, b:b + sw * (ow - 1) + 1:sw]
    return out.reshape(n, c * kh * kw, oh * ow)


def col2im(p: np.ndarray, shape: tuple[int, ...], kh: int, kw: int, sh: int,
           sw: int) -> np.ndarray:
    """The adjoint of `patches`: every patch entry added back onto the input it came from."""
    n, c, h, w = shape
    oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
    p = p.reshape(n, c, kh, kw, oh, ow)
    out = np.zeros(shape)
    for a in range(kh):
        for b in range(kw):
            out[:, :, a:a + sh * (oh - 1) + 1:sh, b:b + sw * (ow - 1) + 1:sw] += p[:, :, a, b]
    return out


@pytest.mark.parametrize("n", [1, 3, 17])
@pytest.mark.parametrize("name", SHAPES)
def test_convolution_kernels_against_numpy(device, rng, name, n):
    c, h, w, f, kh, kw, sh, sw = SHAPES[name]
    net = Network([Convolution(c, f, kh, kw, sh, sw)], input=D3(h, w, c), device=device, seed=1)
    layer = net.layers[0]
    assert layer.short_planes() or name != "small-plane" or device.gemm == "tiled"
    kernel = net.get_parameters()[0]["kernel"]
    oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
    x, dy = rng.normal(size=(n, c, h, w)), rng.normal(size=(n, f, oh * ow))
    buffers = device.allocate("the test", layer.batch_buffers(n))
    x_d, dy_d = device.to_device(x), device.to_device(dy)
    y_d, dx_d = device.zeros((n, f, oh * ow)), device.zeros((n, c, h, w))
    enqueue(layer.setup(n, buffers) + layer.convolve(n, x_d, y_d, buffers)
            + layer.kernel_gradient(n, x_d, dy_d, buffers)
            + layer.input_delta(n, dy_d, dx_d, buffers))
    xp = patches(x, kh, kw, sh, sw)
    terms = c * kh * kw
    np.testing.assert_allclose(y_d.get(), np.einsum("rf,srp->sfp", kernel, xp),
                               **tolerance(device, terms), err_msg="forward")
    np.testing.assert_allclose(layer.gradients["kernel"].get(),
                               np.einsum("srp,sfp->rf", xp, dy),
                               **tolerance(device, n * oh * ow), err_msg="kernel gradient")
    np.testing.assert_allclose(dx_d.get(), col2im(np.einsum("rf,sfp->srp", kernel, dy),
                                                  x.shape, kh, kw, sh, sw),
                               **tolerance(device, f * kh * kw), err_msg="input delta")


_narrow: dict[str, Device] = {}


@pytest.mark.parametrize("name", ["lenet-2", "half-vector", "ragged", "nine", "strided"])
def test_the_kernels_of_256_bit_vectors(device, rng, name):
    """The forms that a CPU of 256-bit vectors (AVX2) builds, forced on this device (dot
    products of 8 floats or 4 doubles, DOT_VW; a float64 run of 4 lies in the run of 8 that
    holds it, moved back with it: conv_runs), against numpy."""
    narrow = _narrow.get(device.precision)
    if narrow is None:
        narrow = _narrow[device.precision] = Device(precision=device.precision)
        narrow.narrow = True  # before its kernels are built
    test_convolution_kernels_against_numpy(narrow, rng, name, 3)


def forward_sites(device, rng, name):
    """A Convolution of SHAPES[name] over 3 samples of x, its forward pass run and built while
    recording: the layer, its buffers, x and y on the device, the forward's form, its builder
    at a given block, and numpy's y."""
    c, h, w, f, kh, kw, sh, sw = SHAPES[name]
    n, oh, ow = 3, (h - kh) // sh + 1, (w - kw) // sw + 1
    net = Network([Convolution(c, f, kh, kw, sh, sw)], input=D3(h, w, c), device=device, seed=1)
    layer = net.layers[0]
    buffers = device.allocate("the test", layer.batch_buffers(n))
    x = rng.normal(size=(n, c, h, w))
    x_d, y_d = device.to_device(x), device.zeros((n, f, oh * ow))
    with blocks.recording() as sites:
        enqueue(layer.setup(n, buffers) + layer.convolve(n, x_d, y_d, buffers))
    (form, _, build, _), = sites
    want = np.einsum("rf,srp->sfp", net.get_parameters()[0]["kernel"], patches(x, kh, kw, sh, sw))
    return layer, buffers, x_d, y_d, form, build, want


@pytest.mark.parametrize("name", ["half-vector", "lenet-2", "ragged", "wide"])
def test_every_forward_block_against_numpy(device, rng, name):
    """Each conv_forward register block (FM filters x PV vectors of positions), in the first
    work-group shape, against numpy: 88 positions, the last work-item's vectors in part and
    wholly past them at PV 2 and 4, and 17 filters, past every FM; 64 positions, 16 filters;
    rows of 11 and 38 outputs, whose last runs are moved back (work-items starting on one at
    some blocks). The same bits at every block."""
    layer, _, _, y_d, form, build, want = forward_sites(device, rng, name)
    terms = layer.geometry()[0] * layer.kh * layer.kw
    results = []
    for registers in blocks.REGISTERS[form]:
        y_d.fill(7)  # every output written: none left from before
        enqueue([build(registers + blocks.LOCALS[form][0])])
        results.append(y_d.get())
        np.testing.assert_allclose(results[-1], want, **tolerance(device, terms),
                                   err_msg=str(registers))
    for got in results[1:]:
        np.testing.assert_array_equal(got, results[0])


PLANES_SHAPES = ["planes", "planes-short", "strided", "ragged-planes", "few-filters",
                 "fewer-filters"]


@pytest.mark.parametrize("name", PLANES_SHAPES)
def test_every_planes_block_gives_the_bits_of_the_other_forms(device, rng, name, monkeypatch):
    """conv_forward_planes (vectors of filters, x's values broadcast: `Convolution.planes`)
    at each register block, in the first work-group shape: the bits of the patches copied out
    and multiplied by gemm_outer (or, 9 positions, by the batch's one product), or of
    conv_forward's runs (rows of 10), and near numpy's; rows of 5, 3, (both strides) 9 and 10
    outputs, 19, 17, 33 and 17 filters (a last vector of filters moved back; at 4 vectors a
    work-item, vectors wholly past F)."""
    if device.gemm == "tiled" or 2 * SHAPES[name][3] < vector_width(device):
        pytest.skip("not a planes shape on this device (the register-blocked GEMMs', F >= VW/2)")
    layer, buffers, x_d, y_d, form, build, want = forward_sites(device, rng, name)
    assert form == "conv_forward_planes" and layer.planes()
    monkeypatch.setattr(layer, "planes", lambda: False)
    enqueue(layer.convolve(3, x_d, y_d, buffers))
    copied = y_d.get()
    np.testing.assert_allclose(copied, want, **tolerance(
        device, layer.geometry()[0] * layer.kh * layer.kw))
    for registers in blocks.REGISTERS[form]:
        y_d.fill(7)  # every output written: none left from before
        enqueue([build(registers + blocks.LOCALS[form][0])])
        np.testing.assert_array_equal(y_d.get(), copied, err_msg=str(registers))


@pytest.mark.parametrize("name", PLANES_SHAPES)
def test_every_planes_kernel_gradient_block_against_numpy(device, rng, name):
    """conv_kernel_gradient_planes (dy laid out positions-major, vectors of filters, x's values
    broadcast) at each register block, in the first work-group shape, against numpy, at the
    shapes of the forward's test: the same bits at every block (each sums over the samples,
    then the positions, in order)."""
    if device.gemm == "tiled" or 2 * SHAPES[name][3] < vector_width(device):
        pytest.skip("not a planes shape on this device (the register-blocked GEMMs', F >= VW/2)")
    c, h, w, f, kh, kw, sh, sw = SHAPES[name]
    n, oh, ow = 17, (h - kh) // sh + 1, (w - kw) // sw + 1
    net = Network([Convolution(c, f, kh, kw, sh, sw)], input=D3(h, w, c), device=device, seed=1)
    layer = net.layers[0]
    buffers = device.allocate("the test", layer.batch_buffers(n))
    x, dy = rng.normal(size=(n, c, h, w)), rng.normal(size=(n, f, oh * ow))
    x_d, dy_d = device.to_device(x), device.to_device(dy)
    with blocks.recording() as sites:  # (dy laid out as the blocks below read it)
        enqueue(layer.setup(n, buffers) + layer.kernel_gradient(n, x_d, dy_d, buffers))
    (form, _, build, _), = sites
    assert form == "conv_kernel_gradient_planes"
    want = np.einsum("srp,sfp->rf", patches(x, kh, kw, sh, sw), dy)
    results = []
    for registers in blocks.REGISTERS[form]:
        layer.gradients["kernel"].fill(7)  # every output written: none left from before
        enqueue([build(registers + blocks.LOCALS[form][0])])
        results.append(layer.gradients["kernel"].get())
        np.testing.assert_allclose(results[-1], want, **tolerance(device, n * oh * ow),
                                   err_msg=str(registers))
    for got in results[1:]:
        np.testing.assert_array_equal(got, results[0])


_tiled: dict[str, Device] = {}


@pytest.mark.parametrize("chunks", [2, 3, 17])
@pytest.mark.parametrize("name, form", [
    ("lenet-1", "registers"), ("lenet-2", "registers"), ("half-vector", "registers"),
    ("strided", "registers"), ("wide", "registers"), ("strided", "tiled"), ("wide", "tiled")])
def test_the_kernel_gradient_in_chunks_of_the_batch(device, rng, name, form, chunks,
                                                    monkeypatch):
    """A GPU's form (Convolution.kernel_chunks > 1): the batch's samples in chunks, each summed
    apart, then added in order (gemm_sum_chunks); at batch 17 against numpy, and one chunk's
    sums (a batch of its samples alone) have the unchunked form's bits. Where the patches are
    copied out ("strided"), gemm_dot sums the chunks, in both its forms; "wide"'s rows of 38
    end in a run moved back."""
    from grenade_py.layers.convolution import Convolution as Layer

    if form == "tiled":
        device = _tiled.setdefault(device.precision,
                                   Device(precision=device.precision, gemm="tiled"))
    monkeypatch.setattr(Layer, "kernel_chunks", lambda self, n: min(n, chunks))
    monkeypatch.setattr(Layer, "planes", lambda self: False)  # a CPU's form: no chunks
    c, h, w, f, kh, kw, sh, sw = SHAPES[name]
    net = Network([Convolution(c, f, kh, kw, sh, sw)], input=D3(h, w, c), device=device, seed=1)
    layer, n = net.layers[0], 17
    oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
    x, dy = rng.normal(size=(n, c, h, w)), rng.normal(size=(n, f, oh * ow))
    buffers = device.allocate("the test", layer.batch_buffers(n))
    assert buffers["chunks"].size == chunks * c * kh * kw * f
    launches = layer.kernel_gradient(n, device.to_device(x), device.to_device(dy), buffers)
    names = [launch.kernel.function_name for launch in launches]
    assert names[-1] == "gemm_sum_chunks"
    product = "gemm_dot_tiled_" if form == "tiled" else "gemm_dot_"
    assert names[-2].startswith("conv_kernel_gradient" if layer.implicit() else product)
    enqueue(layer.setup(n, buffers) + launches)
    xp = patches(x, kh, kw, sh, sw)
    np.testing.assert_allclose(layer.gradients["kernel"].get(), np.einsum("srp,sfp->rf", xp, dy),
                               **tolerance(device, n * oh * ow))
    per = -(-n // chunks)
    monkeypatch.setattr(Layer, "kernel_chunks", lambda self, n: 1)
    alone = device.allocate("the test", layer.batch_buffers(per))
    enqueue(layer.setup(per, alone) + layer.kernel_gradient(
        per, device.to_device(x[:per]), device.to_device(dy[:per]), alone))
    np.testing.assert_array_equal(layer.gradients["kernel"].get().ravel(),
                                  buffers["chunks"].get()[:c * kh * kw * f])


def test_training_with_the_kernel_gradient_in_chunks(device64, rng, monkeypatch):
    """fit through Steps whose convolutions sum their kernel gradients in chunks (a GPU's
    form; the first convolution's implicit, the second's through copied-out patches) reaches
    the unchunked weights to rounding."""
    from grenade_py import D2, FullyConnected, LearningParameters, Pooling, Relu, Reshape, fit
    from grenade_py.layers.convolution import Convolution as Layer

    x, y = rng.normal(size=(30, 20, 20)), rng.normal(size=(30, 5))
    results, launched = [], []
    for chunks in (1, 4):
        monkeypatch.setattr(Layer, "kernel_chunks", lambda self, n, k=chunks: min(n, k))
        net = Network([Convolution(1, 4, 5, 5, 1, 1), Pooling(2, 2, 2, 2), Relu(),
                       Convolution(4, 3, 3, 3, 1, 1), Reshape(), FullyConnected(108, 5)],
                      input=D2(20, 20), device=device64, seed=3)  # 16 wide, then 6
        fit(net, LearningParameters(0.01, 0.9, 1e-4), x, y, batch_size=13, epochs=2, seed=1)
        results.append(net.get_parameters())
        launched.append(sum(launch.kernel.function_name == "gemm_sum_chunks"
                            for step in net.held.values() if hasattr(step, "backward_launches")
                            for launch in step.backward_launches()))
    assert launched[0] == 0 and launched[1] == 4  # two layers, batches of 13 and 4
    for got, want in zip(*results, strict=True):
        for name in want:
            np.testing.assert_allclose(got[name], want[name], rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("name", [k for k, v in SHAPES.items() if v[6] == v[7] == 1])
def test_the_one_launch_input_deltas_equal_the_two_launches(device, rng, name):
    """conv_input_delta (a work-group per sample) and, where the GEMMs are implicit,
    conv_scatter_delta (a work-item per sample and 2 or 3 channels, which the layer then
    takes; over rows that are not whole runs of 8 from dy laid out on their grid, as the
    kernel gradient leaves it) give the bits of gemm_outer's patches and conv_col2im_rows, the
    stride-1 input delta's two launches on devices with tiled GEMMs; so do, for planes under a
    vector, one gemm_outer over the batch and conv_col2im_rows from entry-major patches. The
    turned convolution's forward pass (`flips`), which sums in another order, gives them to
    rounding."""
    if device.gemm != "registers":
        pytest.skip("the one-launch forms run with the register-blocked GEMMs")
    c, h, w, f, kh, kw, _, _ = SHAPES[name]
    n, oh, ow = 3, h - kh + 1, w - kw + 1
    net = Network([Convolution(c, f, kh, kw, 1, 1)], input=D3(h, w, c), device=device, seed=1)
    layer, r = net.layers[0], c * kh * kw
    kernel = layer.parameters["kernel"]
    buffers = device.allocate("the test", layer.batch_buffers(n))
    enqueue(layer.setup(n, buffers))
    assert layer.scatters() == (layer.implicit() and (ow % 8 == 0 or ow >= SCATTER_ROWS and
                                                      not layer.planes()))
    # conv_scatter_delta's layers have none, nor the turned convolution's
    assert ("patches" in buffers) != (layer.scatters() or layer.flips())
    dy_d = device.to_device(rng.normal(size=(n, f, oh * ow)))
    patches = device.zeros((n * (r * oh * ow + vector_width(device)),))
    two = device.zeros((n, c, h, w))
    enqueue([gemm_outer(device, r, oh * ow, f, kernel, f, 1, dy_d, patches, batches=n,
                        b_k=oh * ow, b_batch=f * oh * ow, c_batch=r * oh * ow),
             device.launch("conv_col2im_rows", (n * -(-c // COL2IM_CHANNELS) * h,), n, c, h,
                           w, kh, kw, oh, ow, 0, patches, two)])
    block = blocks.block(device, "conv_input_delta", (n, r, oh * ow, f))
    one = device.zeros((n, c, h, w))
    device.launch(blocks.kernel_name("conv_input_delta", block), (block[2] * n,), c, h, w, kh,
                  kw, oh, ow, f, kernel, dy_d, patches, one,
                  local=blocks.local("conv_input_delta", block))()
    np.testing.assert_array_equal(one.get(), two.get())
    taken = device.zeros((n, c, h, w)) - 7  # every value written: none left from before
    launches = layer.input_delta(n, dy_d, taken, buffers)
    names = [launch.kernel.function_name for launch in launches]
    if layer.short_planes():  # one product over the batch, its col2im from entry-major patches
        assert names[0] == "conv_swap_planes" and names[1].startswith("gemm_outer_") and \
            names[2:] == ["conv_col2im_rows"]
    elif layer.flips():
        assert names[:2] == ["conv_flip_kernel", "shift_planes"] and len(names) == 3 and \
            names[2].startswith("conv_forward")
        enqueue(launches)
        np.testing.assert_allclose(taken.get(), two.get(), **tolerance(device, r))
        return
    elif layer.scatters():
        assert names == ["conv_dy_runs"] * (ow % 8 != 0) + ["conv_scatter_delta"]
    else:
        assert names == [blocks.kernel_name("conv_input_delta", block)]
    enqueue(launches)
    np.testing.assert_array_equal(taken.get(), two.get())
    if layer.scatters():  # after the kernel gradient, from the dy it laid out
        x_d = device.to_device(rng.normal(size=(n, c, h, w)))
        after = device.zeros((n, c, h, w)) - 7
        enqueue(layer.kernel_gradient(n, x_d, dy_d, buffers) +
                layer.input_delta(n, dy_d, after, buffers, relaid=True))
        np.testing.assert_array_equal(after.get(), two.get())
