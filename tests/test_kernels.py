"""Every kernel against a numpy reference, at odd sizes and batch sizes, in both precisions."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import tolerance

from grenade_py.device import streaming_size
from grenade_py.numpy_reference import _backward, _forward, descend
from grenade_py.optimizers import LearningParameters

SIZES = [1, 3, 17, 257]
BATCHES = [1, 5]


def run(device, name, size, *args):
    """Launch `name` once over `size` and wait."""
    device.launch(name, size, *args)()
    device.queue.finish()


@pytest.mark.parametrize("i", [*SIZES, 63, 64, 79])  # (from 64 inputs, sums in vector lanes)
@pytest.mark.parametrize("o", [1, 17, 257])
@pytest.mark.parametrize("n", BATCHES)
def test_fc_forward(device, rng, i, o, n):
    w, b, x = rng.normal(size=(o, i)), rng.normal(size=o), rng.normal(size=(n, i))
    y = device.zeros((n, o))
    run(device, "fc_forward", (o, n), n, i, o, device.to_device(w), device.to_device(b),
        device.to_device(x), y)
    np.testing.assert_allclose(y.get(), x @ w.T + b, **tolerance(device))


@pytest.mark.parametrize("i", SIZES)
@pytest.mark.parametrize("o", [1, 17, 257])
@pytest.mark.parametrize("n", BATCHES)
def test_fc_backward_input(device, rng, i, o, n):
    w, dy = rng.normal(size=(o, i)), rng.normal(size=(n, o))
    dx = device.zeros((n, i))
    run(device, "fc_backward_input", (i, n), n, i, o, device.to_device(w), device.to_device(dy),
        dx)
    np.testing.assert_allclose(dx.get(), dy @ w, **tolerance(device))


@pytest.mark.parametrize("i", SIZES)
@pytest.mark.parametrize("o", [1, 17, 257])
@pytest.mark.parametrize("n", BATCHES)
def test_fc_backward_weights(device, rng, i, o, n):
    x, dy = rng.normal(size=(n, i)), rng.normal(size=(n, o))
    dw, db = device.zeros((o, i)), device.zeros((o,))
    run(device, "fc_backward_weights", (i + 1, o), n, i, o, device.to_device(x),
        device.to_device(dy), dw, db)
    np.testing.assert_allclose(dw.get(), dy.T @ x, **tolerance(device))
    np.testing.assert_allclose(db.get(), dy.sum(axis=0), **tolerance(device))


ACTIVATIONS = {"tanh": "Tanh", "relu": "Relu", "logit": "Logit", "elu": "Elu",
               "trivial": "Trivial"}


@pytest.mark.parametrize("family", ACTIVATIONS)
@pytest.mark.parametrize("count", SIZES + [5 * 257])
def test_activation_kernels(device, rng, family, count):
    kind = ACTIVATIONS[family]
    x = rng.normal(scale=3, size=count)
    x[0] = 0.0  # Relu's slope at exactly 0 must be 0
    dy = rng.normal(size=count)
    y, dx = device.zeros((count,)), device.zeros((count,))
    x_dev = device.to_device(x)
    run(device, f"{family}_forward", (count,), count, x_dev, y)
    expected_y = _forward(kind, x[None])[0]
    np.testing.assert_allclose(y.get(), expected_y, **tolerance(device))
    tape = y if family in ("tanh", "logit") else x_dev  # Tanh and Logit keep their output
    run(device, f"{family}_backward", (count,), count, tape, device.to_device(dy), dx)
    expected_dx = _backward(kind, x[None], expected_y[None], dy[None])[0]
    np.testing.assert_allclose(dx.get(), expected_dx, **tolerance(device))
    if family == "relu":
        assert dx.get()[0] == 0.0


@pytest.mark.parametrize("count", SIZES)
@pytest.mark.parametrize("masked", [False, True])
def test_loss_gradient(device, rng, count, masked):
    width = 3
    y, t = rng.normal(size=(count, width)), rng.normal(size=(count, width))
    mask = (rng.random(count) < 0.5).astype(float)
    dy = device.zeros((count, width))
    run(device, "loss_gradient", (width * count,), count, width, device.dtype(0.25), int(masked),
        device.to_device(y), device.to_device(t), device.to_device(mask), dy)
    expected = (y.astype(device.dtype) - t.astype(device.dtype)) * device.dtype(0.25)
    if masked:
        expected[mask == 0] = 0
    np.testing.assert_allclose(dy.get(), expected, rtol=0, atol=0)


@pytest.mark.parametrize("count", SIZES + [20011])  # 20011: more than a group of 1024 x 8
def test_sgd_is_grenades_descend(device, rng, count):
    """Rounded exactly as Grenade's descend loop, so at most 1 ulp from numpy (0 in practice)."""
    lp = LearningParameters(rate=0.01, momentum=0.9, l2=0.0005)
    dt = device.dtype
    w, m, g = (rng.normal(size=count).astype(dt) for _ in range(3))
    w_dev, m_dev = device.to_device(w), device.to_device(m)
    run(device, "optimizer_update_sgd", streaming_size(count), count, dt(lp.rate),
        dt(lp.momentum), dt(0), dt(0), dt(lp.l2), dt(0), dt(0), w_dev, m_dev,
        device.zeros((count,)), device.to_device(g))
    lp_typed = LearningParameters(float(dt(lp.rate)), float(dt(lp.momentum)), float(dt(lp.l2)))
    m2 = dt(lp_typed.momentum) * m - dt(lp_typed.rate) * g
    w2 = w + m2 - (dt(lp_typed.rate) * dt(lp_typed.l2)) * w
    np.testing.assert_array_max_ulp(m_dev.get(), m2, maxulp=1)
    np.testing.assert_array_max_ulp(w_dev.get(), w2, maxulp=1)
    if device.precision == "float64":
        expected_w, expected_m = descend(w, m, g, lp)
        np.testing.assert_array_max_ulp(w_dev.get(), expected_w, maxulp=1)
        np.testing.assert_array_max_ulp(m_dev.get(), expected_m, maxulp=1)


@pytest.mark.parametrize(("wa", "wb"), [(1, 3), (7, 9), (8, 8), (9, 7), (15, 17), (3, 1)])
@pytest.mark.parametrize("n", BATCHES)
def test_concat_and_split_rows(device, rng, wa, wb, n):
    """concat_rows and split_rows, a work-item per run of 8 values of a row: runs within one
    side (one vector copy), across the two (value by value) and a row's shorter last one."""
    a, b = rng.normal(size=(n, wa)), rng.normal(size=(n, wb))
    y = device.zeros((n, wa + wb)) - 7  # every value written: none left from before
    size = (n * -(-(wa + wb) // 8),)
    run(device, "concat_rows", size, n, wa, wb, wa + wb, 0, device.to_device(a),
        device.to_device(b), y)
    np.testing.assert_array_equal(y.get(), np.concatenate([a, b], axis=1).astype(device.dtype))
    # the parts in rows of their own, with a row's worth to spare after them: nothing spills
    a_d, b_d = device.zeros((n + 1, wa)) - 7, device.zeros((n + 1, wb)) - 7
    run(device, "split_rows", size, n, wa, wb, wa + wb, 0, y, a_d, b_d)
    np.testing.assert_array_equal(a_d.get()[:n], a.astype(device.dtype))
    np.testing.assert_array_equal(b_d.get()[:n], b.astype(device.dtype))
    assert (a_d.get()[n] == -7).all() and (b_d.get()[n] == -7).all()
    # at columns 3 .. of rows of wa + wb + 5 (a nested Concat's part of its parent's), the
    # columns around them untouched; then a alone (wb 0)
    wide = device.zeros((n, wa + wb + 5)) - 7
    run(device, "concat_rows", size, n, wa, wb, wa + wb + 5, 3, device.to_device(a),
        device.to_device(b), wide)
    want = np.full((n, wa + wb + 5), -7.0)
    want[:, 3:3 + wa + wb] = np.concatenate([a, b], axis=1)
    np.testing.assert_array_equal(wide.get(), want.astype(device.dtype))
    run(device, "split_rows", size, n, wa, wb, wa + wb + 5, 3, wide, a_d, b_d)
    np.testing.assert_array_equal(b_d.get()[:n], b.astype(device.dtype))
    alone = device.zeros((n, wa)) - 7
    run(device, "split_rows", (n * -(-wa // 8),), n, wa, 0, wa + wb + 5, 3, wide, alone, alone)
    np.testing.assert_array_equal(alone.get(), a.astype(device.dtype))
