"""The GEMM kernels against numpy, in the three forms FullyConnected uses, at every size the
blocks can meet (1, odd, prime, 784) and batch 1, 7 and 64: the register-blocked CPU form and the
local-memory tiled GPU form (run here on PoCL, which executes any work-group shape), with the
tile shapes a GPU would get and a small one whose tiles every size crosses."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import get_device, tolerance

from grenade_py.device import Device, streaming_size
from grenade_py.gemm import (
    PANEL_ROWS,
    gemm_dot,
    gemm_forward,
    gemm_outer,
    gemm_outer_panels,
    gemm_outer_update,
    gemm_transpose_sums,
    outer_panel_size,
    panel_size,
    vector_width,
)
from grenade_py.kernel_library import kernel_source
from grenade_py.optimizers import SGD, VALUES, Adam, AdamW

_devices: dict[tuple[str, str], Device] = {}


def _form_device(precision, gemm):
    """A device of this precision whose GEMMs take this form ("registers" or "tiled"): the
    default device where it does (a GPU's default is "tiled", a CPU's "registers")."""
    default = get_device(precision)
    if default.gemm == gemm:
        return default
    if (precision, gemm) not in _devices:
        _devices[precision, gemm] = Device(precision=precision, gemm=gemm)
    return _devices[precision, gemm]


@pytest.fixture(params=[("float32", None), ("float64", None), ("float32", "tiled"),
                        ("float64", "tiled"), ("float64", (8, 8, 8, 2, 2))],
                ids=["float32", "float64", "tiled32", "tiled64", "small-tiles64"])
def gemm_device(request, monkeypatch):
    """A device of each form; "small-tiles64" runs every launch in tiles of 8 x 8, which
    every size here crosses."""
    from grenade_py import blocks

    precision, form = request.param
    if form is None:
        return _form_device(precision, "registers")
    if isinstance(form, tuple):
        monkeypatch.setattr(blocks, "block", lambda *_: form)
    return _form_device(precision, "tiled")


SIZES = [1, 3, 17, 257, 784]
BATCHES = [1, 7, 64]


def run(device, launch):
    launch()
    device.queue.finish()


@pytest.mark.parametrize("n", BATCHES)
@pytest.mark.parametrize("i", SIZES)
@pytest.mark.parametrize("o", SIZES)
def test_fully_connected_gemms(gemm_device, rng, n, i, o):
    device = gemm_device
    x, w, b, dy = (rng.normal(size=s) for s in [(n, i), (o, i), (o,), (n, o)])
    xd, wd, bd, dyd = map(device.to_device, (x, w, b, dy))
    tol = tolerance(device, terms=max(n, i, o))
    y = device.zeros((n, o))
    run(device, gemm_dot(device, n, o, i, xd, wd, bd, y))
    np.testing.assert_allclose(y.get(), x @ w.T + b, **tol, err_msg="forward")
    dw = device.zeros((o, i))
    run(device, gemm_outer(device, o, i, n, dyd, 1, o, xd, dw))
    np.testing.assert_allclose(dw.get(), dy.T @ x, **tol, err_msg="weights gradient")
    dx = device.zeros((n, i))
    run(device, gemm_outer(device, n, i, o, dyd, o, 1, wd, dx))
    np.testing.assert_allclose(dx.get(), dy @ w, **tol, err_msg="input gradient")


@pytest.mark.parametrize("splits", [1, 3, 17])
@pytest.mark.parametrize("n, i, o", [(7, 51, 3), (64, 17 * 15, 17)])
def test_the_forward_in_parts(gemm_device, rng, splits, n, i, o):
    """gemm_forward: FullyConnected's forward with k in parts (a GPU's, gemm.k_splits), their
    sums added up in order, against numpy; refused without a buffer for the parts."""
    device = gemm_device
    x, w, b = (rng.normal(size=s) for s in [(n, i), (o, i), (o,)])
    xd, wd, bd, y = *map(device.to_device, (x, w, b)), device.zeros((n, o))
    parts = device.zeros((splits * n * o,))
    for launch in gemm_forward(device, n, o, i, xd, wd, bd, y, splits, parts):
        run(device, launch)
    np.testing.assert_allclose(y.get(), x @ w.T + b, **tolerance(device, terms=i))
    if splits > 1:
        with pytest.raises(ValueError, match="parts needs k a multiple of them and a buffer"):
            gemm_forward(device, n, o, i, xd, wd, bd, y, splits)


@pytest.mark.parametrize("batches", [1, 3, 17])
@pytest.mark.parametrize("m, n, k", [(1, 1, 1), (3, 17, 5), (17, 3, 33), (25, 10, 64)])
def test_batched_gemms_through_strides(gemm_device, rng, batches, m, n, k):
    """The convolution's forms: gemm_dot summing the products of every batch entry, its
    operands' rows and entries apart by strides past their lengths; gemm_outer writing one
    product per entry into rows of a wider array, B read through its strides."""
    device = gemm_device
    tol = tolerance(device, terms=batches * k)
    # A_s (m, k) and B_s (n, k) inside wider rows, entries 2 rows apart: (batches, 2, m, k + 3)
    a = rng.normal(size=(batches, 2, m, k + 3))
    b = rng.normal(size=(batches, n, k + 1))
    bias = rng.normal(size=(n,))
    c = device.zeros((m, n))
    run(device, gemm_dot(device, m, n, k, device.to_device(a), device.to_device(b),
                         device.to_device(bias), c, batches=batches, a_m=k + 3,
                         a_batch=2 * m * (k + 3), b_n=k + 1, b_batch=n * (k + 1)))
    want = np.einsum("smk,snk->mn", a[:, 0, :, :k], b[:, :, :k]) + bias
    np.testing.assert_allclose(c.get(), want, **tol, err_msg="gemm_dot")
    # C_s (m, n) = W (m, k) B_s (k, n): B_s (k, n + 2) rows, C (m, batches, n + 1) rows
    w = rng.normal(size=(m, k))
    b = rng.normal(size=(batches, k, n + 2))
    c = device.zeros((m, batches, n + 1))
    run(device, gemm_outer(device, m, n, k, device.to_device(w), k, 1, device.to_device(b), c,
                           batches=batches, b_k=n + 2, b_batch=k * (n + 2),
                           c_m=batches * (n + 1), c_batch=n + 1))
    got = c.get()
    np.testing.assert_allclose(got[:, :, :n], np.einsum("mk,skn->msn", w, b[:, :, :n]),
                               **tolerance(device, terms=k), err_msg="gemm_outer")
    assert not got[:, :, n:].any(), "gemm_outer wrote past its rows"


@pytest.mark.parametrize("n", [*BATCHES, 17])  # 17: blocks of 8 rows, then one more
@pytest.mark.parametrize("o", SIZES)
def test_gemm_transpose_sums(device, rng, n, o):
    dy = rng.normal(size=(n, o))
    db, dy_t = device.zeros((o,)), device.zeros((o + 1, n))  # a row past the end, kept zero
    run(device, gemm_transpose_sums(device, n, o, device.to_device(dy), dy_t, db))
    np.testing.assert_allclose(db.get(), dy.sum(axis=0), **tolerance(device, terms=n))
    # in order of k: numpy's running sum in the device's precision, to the bit
    assert np.array_equal(db.get(), np.cumsum(dy.astype(device.dtype), axis=0)[-1])
    assert np.array_equal(dy_t.get()[:o], dy.astype(device.dtype).T)
    assert not dy_t.get()[o:].any()


def test_training_with_tiled_gemms_equals_the_register_form(device64, rng):
    """A network trained by minibatches on the GPU-form GEMMs (run on PoCL) reaches the CPU
    form's weights to rounding."""
    from grenade_py import D1, FullyConnected, LearningParameters, Network, Softmax, Tanh, fit

    tiled = Device(precision="float64", gemm="tiled")
    nets = [Network([FullyConnected(13, 40), Tanh(), FullyConnected(40, 5), Softmax()],
                    input=D1(13), device=device, seed=2) for device in (device64, tiled)]
    x, y = rng.normal(size=(100, 13)), np.eye(5)[rng.integers(0, 5, 100)]
    for net in nets:
        fit(net, LearningParameters(0.1, 0.9, 0.001), x, y, batch_size=7, epochs=2, seed=3,
            loss="cross_entropy")
    for a, b in zip(*(net.get_parameters() for net in nets), strict=True):
        for name in a:
            np.testing.assert_allclose(a[name], b[name], rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("chains", [6, 8])
@pytest.mark.parametrize("iterations", [1, 3, 17, 257])
def test_the_peak_kernel_computes_its_chains(device, iterations, chains):
    """peak_fma_<chains> (the benchmark's measured peak) runs the multiply-adds it counts:
    each work-item's chains x <- 0.999 x + 0.001 from x = item + chain, summed over lanes."""
    from grenade_py.gemm import vector_width

    items = 7
    out = device.zeros((items,))
    run(device, device.launch(f"peak_fma_{chains}", (items,), items, iterations,
                              device.dtype(0.999), device.dtype(0.001), out))
    x = (np.arange(items)[:, None] + np.arange(chains)[None]).astype(np.float64)
    for _ in range(iterations):
        x = x * 0.999 + 0.001
    np.testing.assert_allclose(out.get(), x.sum(axis=1) * vector_width(device),
                               **tolerance(device, terms=iterations * chains))


@pytest.mark.parametrize("form", ["gemm_dot", "gemm_outer", "gemm_dot_tiled",
                                  "gemm_outer_tiled"])
def test_every_register_block_against_numpy(device, rng, form, monkeypatch):
    """Each block the tuner may choose (register blocks, and the tiled form's tile shapes), at
    sizes that leave partial blocks and vectors (and a row narrower than one vector)."""
    from grenade_py import blocks

    device = _form_device(device.precision,
                          "tiled" if form in blocks.TILED_FORMS else "registers")
    for candidate in blocks.FORMS[form]:
        monkeypatch.setattr(blocks, "block", lambda *_, candidate=candidate: candidate)
        for m, n, k in [(1, 1, 1), (7, 3, 17), (3, 12, 5), (17, 20, 5), (25, 257, 33)]:
            a, b = rng.normal(size=(m, k)), rng.normal(size=(n, k))
            c = device.zeros((m, n))
            if form.startswith("gemm_dot"):
                bias = rng.normal(size=(n,))
                run(device, gemm_dot(device, m, n, k, device.to_device(a), device.to_device(b),
                                     device.to_device(bias), c))
                want = a @ b.T + bias
            else:  # A read transposed, as the weight gradient reads dy
                run(device, gemm_outer(device, m, n, k, device.to_device(a.T.copy()), 1, m,
                                       device.to_device(b.T.copy()), c))
                want = a @ b.T
            np.testing.assert_allclose(c.get(), want, **tolerance(device, terms=k),
                                       err_msg=f"{blocks.kernel_name(form, candidate)} "
                                               f"{m}x{n}x{k}")


@pytest.mark.parametrize("form", ["gemm_dot", "gemm_outer"])
def test_every_register_block_runs_a_relu(device, rng, form, monkeypatch):
    """Each register block with a Relu fused (FullyConnected's): gemm_dot's relu output is
    relu_forward_at of its C, and gemm_outer's C through a Relu's input Y is relu_backward_at(Y,
    its C without one), both to the bit, over partial blocks, moved-back vectors and rows
    narrower than a vector."""
    from grenade_py import blocks

    device = _form_device(device.precision, "registers")
    for candidate in blocks.FORMS[form]:
        monkeypatch.setattr(blocks, "block", lambda *_, candidate=candidate: candidate)
        for m, n, k in [(1, 1, 1), (7, 3, 17), (3, 12, 5), (17, 20, 5), (25, 257, 33)]:
            a, b = device.to_device(rng.normal(size=(m, k))), rng.normal(size=(n, k))
            c, fused = device.zeros((m, n)), device.zeros((m, n))
            what = f"{blocks.kernel_name(form, candidate)} {m}x{n}x{k}"
            if form == "gemm_dot":
                bias = device.to_device(rng.normal(size=(n,)))
                run(device, gemm_dot(device, m, n, k, a, device.to_device(b), bias, c,
                                     relu=fused))
                np.testing.assert_allclose(c.get(), a.get() @ b.T + bias.get(),
                                           **tolerance(device, terms=k), err_msg=what)
                want = np.where(c.get() > 0, c.get(), 0)
            else:
                y = rng.normal(size=(m, n))
                bt = device.to_device(b.T.copy())
                run(device, gemm_outer(device, m, n, k, a, k, 1, bt, c))
                run(device, gemm_outer(device, m, n, k, a, k, 1, bt, fused,
                                       relu=device.to_device(y)))
                want = np.where(y > 0, c.get(), 0)
            np.testing.assert_array_equal(fused.get(), want, err_msg=what)


@pytest.mark.parametrize("chosen", [SGD(0.03, 0.9, 1e-3), Adam(0.01, weight_decay=0.1),
                                    AdamW(0.01, weight_decay=0.1)], ids=["sgd", "adam", "adamw"])
def test_every_register_block_steps_the_weights(device, rng, chosen, monkeypatch):
    """Each register block of gemm_outer_update steps the weights (and moments) from the
    product it forms exactly as gemm_outer's product then the optimiser's update kernel do, to
    the bit: over partial blocks, rows past the edge, and vectors moved back past columns that
    the block (or the block before) steps already, each weight stepped once."""
    from grenade_py import blocks

    device = _form_device(device.precision, "registers")
    vw = vector_width(device)
    values = chosen.arguments(3, device.dtype)
    chosen_block = blocks.block
    for candidate in blocks.FORMS["gemm_outer_update"]:
        monkeypatch.setattr(blocks, "block", lambda d, f, s, c=candidate: c
                            if f == "gemm_outer_update" else chosen_block(d, f, s))
        for m, n, k in [(1, vw, 1), (7, vw + 1, 17), (3, 2 * vw + 1, 5), (17, 40, 5),
                        (25, 257, 33)]:
            a, b = device.to_device(rng.normal(size=(m, k))), device.to_device(
                rng.normal(size=(k, n)))
            start = [rng.normal(size=(m, n)), rng.normal(size=(m, n)),
                     rng.uniform(size=(m, n))]
            want, got = ([device.to_device(x) for x in start] for _ in range(2))
            gradient = device.zeros((m, n))
            run(device, gemm_outer(device, m, n, k, a, k, 1, b, gradient))
            rule = device.launch(f"optimizer_update_{chosen.kernel}", streaming_size(m * n),
                                 m * n, *(device.dtype(values[v]) for v in VALUES), *want,
                                 gradient)
            run(device, rule)
            launch = gemm_outer_update(device, m, n, k, a, k, 1, b, *got)
            launch.set_all(values | {"kind": chosen.kind})
            run(device, launch)
            what = f"{blocks.kernel_name('gemm_outer_update', candidate)} {m}x{n}x{k}"
            for name, x, y in zip(("weights", "momentum", "second"), got, want, strict=True):
                np.testing.assert_array_equal(x.get(), y.get(), err_msg=f"{what} {name}")
            assert not np.array_equal(got[0].get(), start[0]), what


def test_every_panel_block_sums_as_gemm_outer(device, rng, monkeypatch):
    """FullyConnected's forward from panels of W (gemm_pack_panels, then gemm_panels: batches of
    PANEL_ROWS rows or more) at each block the tuner may choose, over partial blocks, panels and
    vectors, k below, at and past a vector: numpy's values; gemm_outer's bits of A B^T (the same
    sums in the same order) plus the bias, where that runs in vectors (n >= VW); relu(C) to the
    bit."""
    from grenade_py import blocks

    device = _form_device(device.precision, "registers")
    vw, chosen = vector_width(device), blocks.block
    for candidate in blocks.FORMS["gemm_panels"]:
        monkeypatch.setattr(blocks, "block", lambda d, f, s, c=candidate: c
                            if f == "gemm_panels" else chosen(d, f, s))
        for m, n, k in [(1, 1, 1), (7, 3, 17), (13, 4 * vw + 5, vw), (25, 257, 2 * vw + 3)]:
            a, b = device.to_device(rng.normal(size=(m, k))), rng.normal(size=(n, k))
            bias = rng.normal(size=(n,)).astype(device.dtype)
            panels = device.zeros((-(-n // (4 * vw)) * 4 * vw * k,))
            c, r, sums = (device.zeros((m, n)) for _ in range(3))
            for launch in gemm_forward(device, m, n, k, a, device.to_device(b),
                                       device.to_device(bias), c, relu=r, panels=panels):
                run(device, launch)
            what = f"{blocks.kernel_name('gemm_panels', candidate)} {m}x{n}x{k}"
            np.testing.assert_allclose(c.get(), a.get() @ b.T + bias,
                                       **tolerance(device, terms=k), err_msg=what)
            if n >= vw:
                run(device, gemm_outer(device, m, n, k, a, k, 1, device.to_device(b.T.copy()),
                                       sums))
                np.testing.assert_array_equal(c.get(), sums.get() + bias, err_msg=what)
            np.testing.assert_array_equal(r.get(), np.where(c.get() > 0, c.get(), 0),
                                          err_msg=what)


@pytest.mark.parametrize("n", [1, 3, 17, 257])
def test_pack_panels_lays_w_out_as_gemm_panels_reads_it(device, rng, n):
    """gemm_pack_panels: Bp[(p K + k) PANEL + w] = B[min(p PANEL + w, N - 1), k] over whole
    panels (the rows past N repeat the last), k below, at and past a vector; nothing written
    past the panels."""
    device = _form_device(device.precision, "registers")
    vw = vector_width(device)
    panel = 4 * vw
    count = -(-n // panel)
    for k in (1, vw - 1, vw, 2 * vw + 3):
        b = rng.normal(size=(n, k))
        size = count * panel * k
        out = device.to_device(np.full(size + panel, np.nan))
        launches = gemm_forward(device, 1, n, k, device.zeros((1, k)), device.to_device(b),
                                device.zeros((n,)), device.zeros((1, n)), panels=out)
        run(device, launches[0])
        got = out.get()
        rows = b[np.minimum(np.arange(count * panel), n - 1)].astype(device.dtype)
        want = rows.reshape(count, panel, k).transpose(0, 2, 1).ravel()
        np.testing.assert_array_equal(got[:size], want, err_msg=f"{n}x{k}")
        assert np.isnan(got[size:]).all(), f"{n}x{k}: written past the panels"


def test_a_batch_of_panel_rows_runs_from_panels(device, rng):
    """FullyConnected's forward over PANEL_ROWS rows and 257 outputs runs from panels of W on a
    CPU of 16-float vectors (`panel_size`), with numpy's values; fewer rows or outputs, and
    narrower CPUs, as gemm_dot."""
    from grenade_py import D1, FullyConnected, Network, execution, run_net

    net = Network([FullyConnected(33, 257)], input=D1(33), device=device, seed=1)
    x = rng.normal(size=(PANEL_ROWS, 33))
    wide = device.gemm == "registers" and not device.narrow
    assert bool(panel_size(device, PANEL_ROWS, 257, 33)) == wide
    assert not panel_size(device, PANEL_ROWS - 1, 257, 33)
    assert not panel_size(device, PANEL_ROWS, 255, 33)
    assert ("0.panels" in execution.steps(net, PANEL_ROWS, inference=True).buffers) == wide
    p = net.get_parameters()[0]
    np.testing.assert_allclose(run_net(net, x), x @ p["weights"].T + p["bias"],
                               **tolerance(device, terms=33))


@pytest.mark.parametrize(("m", "panels", "k"), [(1, 1, 1), (3, 2, 5), (17, 3, 33)])
def test_gemm_outer_from_panels_is_gemm_outer(device, rng, m, panels, k):
    """gemm_outer over B's column strips copied into panels (gemm_copy_panels; FullyConnected's
    input delta where W is large: `outer_panel_size`), B's rows further apart than its width,
    A read through strides, with and without a Relu's input: gemm_outer's bits, numpy's
    values."""
    device = _form_device(device.precision, "registers")
    n = panels * 4 * vector_width(device)
    a, b = rng.normal(size=(k, m)), rng.normal(size=(k, n + 3))  # A read transposed
    y = device.to_device(rng.normal(size=(m, n)))
    ad, bd = device.to_device(a), device.to_device(b)
    for relu in (None, y):
        got, want = device.zeros((m, n)), device.zeros((m, n))
        for launch in gemm_outer_panels(device, m, n, k, ad, 1, m, bd, n + 3, got,
                                        device.zeros((k * n,)), relu):
            run(device, launch)
        run(device, gemm_outer(device, m, n, k, ad, 1, m, bd, want, b_k=n + 3, relu=relu))
        np.testing.assert_array_equal(got.get(), want.get())
        product = a.T @ b[:, :n]
        np.testing.assert_allclose(got.get(), product if relu is None else
                                   np.where(y.get() > 0, product, 0),
                                   **tolerance(device, terms=k))


def test_a_large_layers_input_delta_runs_from_panels(device, rng):
    """FullyConnected's input delta through a layer of 1024 inputs and 512 outputs (W of 2 MiB
    in float32) over 32 rows runs from W's panels on a CPU of 16-float vectors
    (`outer_panel_size`), its Relu below in the launch, with numpy's values, and its forward
    still as gemm_dot; a smaller W, fewer rows or inputs not whole panels as one gemm_outer."""
    from grenade_py import D1, FullyConnected, Network, Relu, execution, run_gradient, run_network

    net = Network([FullyConnected(3, 1024), Relu(), FullyConnected(1024, 512)], input=D1(3),
                  device=device, seed=1)
    wide = device.gemm == "registers" and not device.narrow
    assert bool(outer_panel_size(device, 32, 1024, 512)) == wide
    assert not outer_panel_size(device, 31, 1024, 512)
    assert not outer_panel_size(device, 32, 1024, 128)  # 1 MiB in float64
    assert not outer_panel_size(device, 32, 1000, 512)
    step = execution.Step(net, 32, input_delta=True)
    names = [launch.kernel.function_name for launch in step.backward_launches()]
    assert ("gemm_copy_panels" in names) == wide
    # (the forward shares the panels' buffer, but below PANEL_ROWS rows runs as gemm_dot)
    assert "gemm_pack_panels" not in [launch.kernel.function_name
                                      for launch in step.forward_launches(True)]
    x, dy = rng.normal(size=(32, 3)), rng.normal(size=(32, 512))
    tapes, _ = run_network(net, x)
    _, dx = run_gradient(net, tapes, dy)
    first, second = net.get_parameters()[0], net.get_parameters()[2]
    hidden = x @ first["weights"].T + first["bias"]
    want = np.where(hidden > 0, dy @ second["weights"], 0) @ first["weights"]
    np.testing.assert_allclose(dx, want, **tolerance(device, terms=1024))


@pytest.mark.parametrize("p", [1, 3, 8, 17, 31, 40, 257])
@pytest.mark.parametrize(("k", "step"), [(1, 1), (3, 3), (17, 1)])
def test_gemm_row_product_is_gemm_outers_row(device, rng, p, k, step):
    """The fused loop's one-row product (four, two and one vectors of columns at a time, then
    columns one by one) gives gemm_outer's bits for the same row, and numpy's values."""
    a, b = rng.normal(size=k * step), rng.normal(size=(k, p))
    program = device.build(kernel_source() + """
kernel void row_product(global const REAL *a, int step, int K, global const REAL *B, int P,
                        global REAL *out) { gemm_row_product(a, step, K, B, P, out); }""")
    a_dev, b_dev = device.to_device(a), device.to_device(b)
    got, want = device.zeros((p,)), device.zeros((1, p))
    run(device, device.launch("row_product", (1,), a_dev, step, k, b_dev, p, got,
                              program=program, local=(1,)))
    run(device, gemm_outer(device, 1, p, k, a_dev, 0, step, b_dev, want))
    np.testing.assert_array_equal(got.get(), want.get()[0])
    np.testing.assert_allclose(got.get(), a[::step] @ b, **tolerance(device, terms=k))


@pytest.mark.parametrize("p", [1, 3, 17, 40, 257])
@pytest.mark.parametrize("count", [1, 3, 4])
def test_gemm_rows_product_is_gemm_row_product_per_row(device, rng, p, count):
    """Four rows side by side (gemm_rows_product, rows a_row apart and entries a_step apart in
    A, outputs out_row apart) give each row gemm_row_product's bits; the rows past `count` are
    not written. (The reference is a row per work-item: PoCL 7.1 (LLVM 21) ran a loop over the
    rows, `for (t = 0; t < count; ++t) gemm_row_product(...)`, once more than count for odd
    counts where P < 8; see the README.)"""
    k, a_row, a_step, out_row = 17, 2, 5, p + 3
    a, b = rng.normal(size=(count - 1) * a_row + (k - 1) * a_step + 1), rng.normal(size=(k, p))
    program = device.build(kernel_source() + """
kernel void rows(global const REAL *a, int a_row, int a_step, int K, global const REAL *B, int P,
                 global REAL *out, int out_row, int count) {
    gemm_rows_product(a, a_row, a_step, K, B, P, out, out_row, count);
}
kernel void row(global const REAL *a, int a_row, int a_step, int K, global const REAL *B, int P,
                global REAL *out, int out_row, int count) {
    const int t = get_global_id(0);
    if (t < count) gemm_row_product(a + t * a_row, a_step, K, B, P, out + t * out_row);
}""")
    a_dev, b_dev = device.to_device(a), device.to_device(b)
    got, want = (device.to_device(np.full(4 * out_row, 7.0)) for _ in range(2))
    for name, out, items in (("rows", got, 1), ("row", want, count)):
        run(device, device.launch(name, (items,), a_dev, a_row, a_step, k, b_dev, p, out,
                                  out_row, count, program=program, local=(1,)))
    np.testing.assert_array_equal(got.get(), want.get())
    assert (got.get()[count * out_row:] == 7).all()
    for t in range(count):
        np.testing.assert_allclose(got.get()[t * out_row:t * out_row + p],
                                   a[t * a_row::a_step][:k] @ b, **tolerance(device, terms=k))


def test_a_tile_shape_the_kernel_cannot_run_falls_back_to_the_smallest(rng, monkeypatch):
    """Where the chosen tile shape's kernel runs fewer work-items than its work-group (a GPU
    limits a kernel of many registers), the launch takes the smallest tiles: right results."""
    from grenade_py import blocks
    from grenade_py.errors import DeviceError

    device = _form_device("float64", "tiled")
    launch = device.launch

    def limited(name, *args, local=None, **kwargs):
        if local is not None and np.prod(local) > 16:
            raise DeviceError(f"{name} runs at most 16 work-items here")
        return launch(name, *args, local=local, **kwargs)

    monkeypatch.setattr(device, "launch", limited)
    x, w, b = rng.normal(size=(9, 20)), rng.normal(size=(30, 20)), rng.normal(size=(30,))
    y = device.zeros((9, 30))
    step = gemm_dot(device, 9, 30, 20, *map(device.to_device, (x, w, b)), y)
    assert step.kernel.function_name == blocks.kernel_name("gemm_dot_tiled",
                                                           blocks.SMALLEST_TILE)
    run(device, step)
    np.testing.assert_allclose(y.get(), x @ w.T + b, **tolerance(device, terms=20))
