"""The register-blocked GEMM kernels against numpy, in the three forms FullyConnected uses, at
every size the blocks can meet (1, odd, prime, 784) and batch 1, 7 and 64."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import tolerance

from grenade_py.gemm import gemm_column_sums, gemm_dot, gemm_outer

SIZES = [1, 3, 17, 257, 784]
BATCHES = [1, 7, 64]


def run(device, launch):
    launch()
    device.queue.finish()


@pytest.mark.parametrize("n", BATCHES)
@pytest.mark.parametrize("i", SIZES)
@pytest.mark.parametrize("o", SIZES)
def test_fully_connected_gemms(device, rng, n, i, o):
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
