"""The GEMM kernels against numpy, in the three forms FullyConnected uses, at every size the
blocks can meet (1, odd, prime, 784) and batch 1, 7 and 64: the register-blocked CPU form and the
local-memory tiled GPU form (run here on PoCL, which executes any work-group shape), with the
tile shapes a GPU would get and a small one whose tiles every size crosses."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import get_device, tolerance

from grenade_py.device import Device
from grenade_py.gemm import gemm_column_sums, gemm_dot, gemm_outer

_tiled: dict[tuple[str, tuple], Device] = {}


@pytest.fixture(params=[("float32", None), ("float64", None), ("float32", "tiled"),
                        ("float64", "tiled"), ("float64", (8, 8, 8, 2, 2))],
                ids=["float32", "float64", "tiled32", "tiled64", "small-tiles64"])
def gemm_device(request):
    precision, form = request.param
    if form is None:
        return get_device(precision)
    key = (precision, form if isinstance(form, tuple) else ())
    if key not in _tiled:
        device = Device(precision=precision, gemm="tiled")
        if isinstance(form, tuple):
            device.tiles = form
        _tiled[key] = device
    return _tiled[key]

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


@pytest.mark.parametrize("n", BATCHES)
@pytest.mark.parametrize("o", SIZES)
def test_gemm_column_sums(device, rng, n, o):
    dy = rng.normal(size=(n, o))
    db = device.zeros((o,))
    run(device, gemm_column_sums(device, n, o, device.to_device(dy), db))
    np.testing.assert_allclose(db.get(), dy.sum(axis=0), **tolerance(device, terms=n))


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


@pytest.mark.parametrize("iterations", [1, 3, 17, 257])
def test_the_peak_kernel_computes_its_chains(device, iterations):
    """peak_fma (the benchmark's measured peak) runs the multiply-adds it counts: each
    work-item's 8 chains x <- 0.999 x + 0.001 from x = item + chain, summed over lanes."""
    from grenade_py.gemm import vector_width

    items = 7
    out = device.zeros((items,))
    run(device, device.launch("peak_fma", (items,), items, iterations, device.dtype(0.999),
                              device.dtype(0.001), out))
    x = (np.arange(items)[:, None] + np.arange(8)[None]).astype(np.float64)
    for _ in range(iterations):
        x = x * 0.999 + 0.001
    np.testing.assert_allclose(out.get(), x.sum(axis=1) * vector_width(device),
                               **tolerance(device, terms=iterations * 8))
