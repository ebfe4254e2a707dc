"""The recurrent training kernels (kernels/recurrent.cl) launched directly against numpy, at odd
sizes, in both precisions. The LSTM and BasicRecurrent step kernels are checked through whole
networks in test_recurrent.py."""
from __future__ import annotations

import numpy as np
import pyopencl.array as cl_array
import pytest
from conftest import tolerance

from grenade_py.numpy_reference import adam

RATE, MOMENTUM, L2 = 0.01, 0.9, 0.0005
SGD_ARGS = (RATE, MOMENTUM, 0.0, 0.0)  # rate, beta1/momentum, beta2, eps
KERNELS = {0: "sgd", 1: "adam", 2: "adamw"}


def optimizer_args(dt, rate, beta1, beta2, eps, decay, t=0):
    """The kernels' optimiser arguments: rate, beta1, beta2, eps, decay, beta1^t, beta2^t."""
    return tuple(dt(v) for v in (rate, beta1, beta2, eps, decay, beta1 ** t, beta2 ** t))


def run(device, name, size, *args):
    device.launch(name, size, *args)()
    device.queue.finish()


def update(device, kind, steps, rows, cols, d, ldd, x, ldx, values, ordered, w, m, v):
    """recurrent_update_<kind> over one parameter array (a table of one entry): d and x side by
    side in the buffer the table points into."""
    both = device.to_device(np.concatenate([d.ravel(), x.ravel()]))
    table = cl_array.to_device(device.queue, np.array(
        [0, rows, cols, 0, ldd, d.size, ldx, 1, 0], np.int32))
    run(device, f"recurrent_update_{KERNELS[kind]}", (rows * -(-cols // 32),), steps, 1, table,
        both, *values, ordered, w, m, v)


@pytest.mark.parametrize(("rows", "cols"), [(1, 1), (3, 7), (17, 8), (5, 17), (1, 257)])
@pytest.mark.parametrize("steps", [1, 5])
def test_ordered_update_is_grenades_steps_in_order(device, rng, rows, cols, steps):
    """Each step's gradient d[k, r] x[k, c] applied in time order as Grenade's descend step,
    rounded as the same sequence of numpy operations (0 ulp), l2 0 where a parameter has none."""
    dt = device.dtype
    w, m = rng.normal(size=(rows, cols)).astype(dt), rng.normal(size=(rows, cols)).astype(dt)
    # d and x rows longer than the matrix: the kernel reads them through their strides
    d = rng.normal(size=(steps, rows + 2)).astype(dt)
    x = rng.normal(size=(steps, cols + 1)).astype(dt)
    for l2 in (L2, 0.0):
        w_dev, m_dev = device.to_device(w), device.to_device(m)
        update(device, 0, steps, rows, cols, d, rows + 2, x, cols + 1,
               optimizer_args(dt, *SGD_ARGS, l2), 1, w_dev, m_dev, device.zeros((1,)))
        wv, mv = w.copy(), m.copy()
        for k in range(steps):
            g = d[k, :rows, None] * x[k, None, :cols]
            mv = dt(MOMENTUM) * mv - dt(RATE) * g
            wv = wv + mv - dt(RATE) * dt(l2) * wv
        np.testing.assert_array_equal(m_dev.get(), mv)
        np.testing.assert_array_equal(w_dev.get(), wv)


@pytest.mark.parametrize(("rows", "cols"), [(1, 1), (3, 17), (17, 8)])
def test_summed_update_takes_one_step(device, rng, rows, cols):
    dt, steps = device.dtype, 7
    w, m = rng.normal(size=(rows, cols)), rng.normal(size=(rows, cols))
    d, x = rng.normal(size=(steps, rows)), rng.normal(size=(steps, cols))
    w_dev, m_dev = device.to_device(w), device.to_device(m)
    update(device, 0, steps, rows, cols, d, rows, x, cols, optimizer_args(dt, *SGD_ARGS, L2),
           0, w_dev, m_dev, device.zeros((1,)))
    g = d.T @ x
    m2 = MOMENTUM * m - RATE * g
    np.testing.assert_allclose(m_dev.get(), m2, **tolerance(device, steps))
    np.testing.assert_allclose(w_dev.get(), w + m2 - RATE * L2 * w, **tolerance(device, steps))


@pytest.mark.parametrize("n", [1, 3, 17, 257])
def test_state_descent_is_grenades_update_rec_inputs(device, rng, n):
    dt, batch = device.dtype, 3
    state, grad = rng.normal(size=n).astype(dt), rng.normal(size=(batch, n)).astype(dt)
    state_dev = device.to_device(state)
    run(device, "recurrent_state_update", (n,), n, batch, 0, *optimizer_args(dt, *SGD_ARGS, L2),
        device.to_device(grad), state_dev, device.zeros((n,)), device.zeros((n,)))
    total = grad[0] + grad[1] + grad[2]
    np.testing.assert_array_equal(state_dev.get(),
                                  (1 - dt(RATE) * dt(L2)) * state - dt(RATE) * total)


@pytest.mark.parametrize(("rows", "cols"), [(1, 1), (3, 7), (5, 17)])
@pytest.mark.parametrize(("kind", "ordered"), [(1, 1), (2, 1), (1, 0)])
def test_adam_updates_are_torchs_steps_in_order(device64, rng, rows, cols, kind, ordered):
    """Adam (1) and AdamW (2) through the recurrent update: step t0 + k from step k's gradient
    (ordered), or step t0 from their sum, equal a numpy transcription of torch's loop."""
    dt, steps, t0, decay = np.float64, 5, 3, 0.01
    w = rng.normal(size=(rows, cols))
    m, v = rng.normal(size=(rows, cols)), rng.uniform(size=(rows, cols))
    d, x = rng.normal(size=(steps, rows)), rng.normal(size=(steps, cols))
    w_dev, m_dev, v_dev = (device64.to_device(a) for a in (w, m, v))
    update(device64, kind, steps, rows, cols, d, rows, x, cols,
           optimizer_args(dt, 0.01, 0.9, 0.999, 1e-8, decay, t0), ordered, w_dev, m_dev, v_dev)
    gradients = [d[k, :, None] * x[k, None, :] for k in range(steps)]
    for k, g in enumerate(gradients if ordered else [sum(gradients)]):
        w, m, v = adam(w, m, v, g, t0 + k, 0.01, weight_decay=decay, decoupled=kind == 2)
    for got, want in ((w_dev, w), (m_dev, m), (v_dev, v)):
        np.testing.assert_allclose(got.get(), want, rtol=1e-13, atol=1e-15)


def test_adam_state_update_is_one_adam_step(device64, rng):
    n, batch, t = 17, 3, 4
    state, grad = rng.normal(size=n), rng.normal(size=(batch, n))
    m, v = rng.normal(size=n), rng.uniform(size=n)
    state_dev, m_dev, v_dev = (device64.to_device(a) for a in (state, m, v))
    run(device64, "recurrent_state_update", (n,), n, batch, 1,
        *optimizer_args(np.float64, 0.01, 0.9, 0.999, 1e-8, 0.001, t),
        device64.to_device(grad), state_dev, m_dev, v_dev)
    want = adam(state, m, v, grad.sum(axis=0), t, 0.01, weight_decay=0.001)
    for got, expected in zip((state_dev, m_dev, v_dev), want, strict=True):
        np.testing.assert_allclose(got.get(), expected, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize(("rows", "n"), [(1, 1), (3, 17), (17, 3)])
def test_masked_error_and_metrics(device, rng, rows, n):
    """A sequence's error and what it reports count only the steps with a target."""
    y = rng.uniform(0.01, 1, size=(rows, n))
    target = np.eye(n)[rng.integers(0, n, size=rows)]
    mask = (rng.uniform(size=rows) < 0.6).astype(float)
    mask[-1] = 1
    dy, sums = device.zeros((rows, n)), device.zeros((3,))
    y_dev, t_dev, m_dev = (device.to_device(a) for a in (y, target, mask))
    run(device, "loss_gradient", (n * rows,), rows, n, device.dtype(0.5), 1, y_dev, t_dev, m_dev,
        dy)
    np.testing.assert_allclose(dy.get(), 0.5 * (y - target) * mask[:, None], **tolerance(device))
    kept, hot = mask != 0, target.argmax(axis=1)
    logits = np.log(y)  # softmax(log y) = y / sum y
    for cross_entropy, loss in ((0, 0.5 * ((y - target) ** 2).sum(axis=1)),
                                (1, -np.log(y[np.arange(rows), hot] / y.sum(axis=1)))):
        sums.fill(0)
        device.launch("loss_metrics", (64,), rows, n, cross_entropy, 1, y_dev,
                      device.to_device(logits), t_dev, m_dev, sums, local=(64,))()
        want = [loss[kept].sum(), (y.argmax(axis=1) == hot)[kept].sum(), kept.sum()]
        np.testing.assert_allclose(sums.get(), want, **tolerance(device, n))


@pytest.mark.parametrize(("steps", "batch", "n"), [(1, 1, 1), (3, 2, 5), (17, 3, 7)])
@pytest.mark.parametrize("every", [0, 1])
def test_one_hot_sequences(device, rng, steps, batch, n, every):
    corpus = rng.integers(0, n, size=100).astype(np.int32)
    offsets = rng.integers(0, 100 - steps - 1, size=batch + 2).astype(np.int32)
    rows = steps * batch
    x, target, mask = device.zeros((rows, n)), device.zeros((rows, n)), device.zeros((rows,))
    run(device, "one_hot_sequences", (rows,), steps, batch, n, 2, every,
        cl_array.to_device(device.queue, corpus), cl_array.to_device(device.queue, offsets), x,
        target, mask)
    eye = np.eye(n)
    for t in range(steps):
        for s in range(batch):
            at = offsets[2 + s] + t
            np.testing.assert_array_equal(x.get()[t * batch + s], eye[corpus[at]])
            np.testing.assert_array_equal(target.get()[t * batch + s], eye[corpus[at + 1]])
            assert mask.get()[t * batch + s] == (1 if every or t == steps - 1 else 0)
