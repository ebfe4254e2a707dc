"""Softmax and the cross-entropy loss: kernels, gradients, overflow, reported loss values."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import numeric_gradients, tolerance

from grenade_py import (
    D1,
    D2,
    FullyConnected,
    Network,
    ShapeError,
    Softmax,
    Tanh,
    back_propagate,
    run_net,
)
from grenade_py.numpy_reference import _backward, _forward


def softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("n", [1, 7, 64])
@pytest.mark.parametrize("w", [1, 3, 17, 257, 784])
def test_softmax_kernels(device, rng, n, w):
    x, dy = rng.normal(scale=5, size=(n, w)), rng.normal(size=(n, w))
    y, dx = device.zeros((n, w)), device.zeros((n, w))
    device.launch("softmax_forward", (n,), n, w, device.to_device(x), y)()
    np.testing.assert_allclose(y.get(), _forward("Softmax", x), **tolerance(device))
    device.launch("softmax_backward", (n,), n, w, y, device.to_device(dy), dx)()
    expected = _backward("Softmax", x, softmax(x), dy)
    np.testing.assert_allclose(dx.get(), expected, **tolerance(device))


def test_softmax_only_takes_vectors(device):
    with pytest.raises(ShapeError, match="layer 0 .Softmax. takes a D1 vector"):
        Network([Softmax()], input=D2(2, 2), device=device)


def cross_entropy(net, x, t):
    return -np.sum(t * np.log(run_net(net, x))) / len(x)


@pytest.mark.parametrize("n", [1, 5])
def test_cross_entropy_gradient_matches_finite_differences(device64, rng, n):
    net = Network([FullyConnected(4, 3), Tanh(), FullyConnected(3, 6), Softmax()], input=D1(4),
                  device=device64, seed=3)
    x = rng.normal(size=(n, 4))
    t = np.eye(6)[rng.integers(0, 6, size=n)]
    grads = back_propagate(net, x, t, loss="cross_entropy")
    numeric = numeric_gradients(net, lambda n: cross_entropy(n, x, t))
    for index in (0, 2):
        for name, value in numeric[index].items():
            np.testing.assert_allclose(grads[index][name], value, rtol=1e-6, atol=1e-8)


def test_squared_error_through_softmax_matches_finite_differences(device64, rng):
    """Without cross-entropy, Softmax's own backward pass carries the gradient."""
    net = Network([FullyConnected(3, 4), Softmax()], input=D1(3), device=device64, seed=4)
    x, t = rng.normal(size=(2, 3)), rng.uniform(size=(2, 4))
    grads = back_propagate(net, x, t)
    numeric = numeric_gradients(net, lambda n: 0.5 * np.sum((run_net(n, x) - t) ** 2) / 2)
    np.testing.assert_allclose(grads[0]["weights"], numeric[0]["weights"], rtol=1e-6, atol=1e-9)


def test_large_logits_give_finite_results(device):
    """Logits ~1e4 overflow exp() unless the maximum is subtracted first."""
    net = Network([FullyConnected(2, 3), Softmax()], input=D1(2), device=device)
    net.set_parameters([{"weights": np.array([[1e4, 0.0], [0.0, 1e4], [-1e4, -1e4]]),
                         "bias": np.zeros(3)}, {}])
    x = np.array([[1.0, 0.5], [0.2, 1.0]])
    t = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    p = run_net(net, x)
    assert np.all(np.isfinite(p))
    np.testing.assert_allclose(p, [[1, 0, 0], [0, 1, 0]], atol=1e-6)
    grads = back_propagate(net, x, t, loss="cross_entropy")
    assert all(np.all(np.isfinite(g)) for g in grads[0].values())
    # p - t at the logits, averaged: dW = (p - t)^T x / 2
    np.testing.assert_allclose(grads[0]["weights"], (p - t).T @ x / 2, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("n", [1, 5, 257])
def test_loss_metrics_kernel(device, rng, n):
    """Reported loss values, summed over rows (more rows than the kernel's lanes at 257):
    cross-entropy from the logits (finite at 1e4), squared error; correct rows; rows."""
    w = 4
    logits = rng.normal(size=(n, w))
    logits[0] = [1e4, -1e4, 0, 3]
    p = softmax(logits)
    t = np.eye(w)[rng.integers(0, w, size=n)]
    t[0] = [0, 1, 0, 0]  # the -1e4 logit: loss 2e4, not inf
    p_dev, t_dev = device.to_device(p), device.to_device(t)
    log_p = logits - logits.max(axis=1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(axis=1, keepdims=True))
    right = (p.argmax(axis=1) == t.argmax(axis=1)).sum()
    for cross_entropy, loss in ((1, -(t * log_p).sum(axis=1)),
                                (0, 0.5 * ((p - t) ** 2).sum(axis=1))):
        acc = device.to_device(np.array([1.0, 2.0, 3.0]))  # it adds to what is there
        device.launch("loss_metrics", (64,), n, w, cross_entropy, 0, p_dev,
                      device.to_device(logits), t_dev, t_dev, acc, local=(64,))()
        np.testing.assert_allclose(acc.get(), [1 + loss.sum(), 2 + right, 3 + n], rtol=1e-5)


@pytest.mark.parametrize("width", [1, 3, 17, 70, 784])
def test_gather_rows(device, rng, width):
    """fit's batches: rows order[2 .. 10) of the inputs and of the targets (of 10 values), in
    one launch, whole vectors and the rest, a work-item per 64 values of a row (at 784: more
    work-items than one group of 64)."""
    import pyopencl.array as cl_array

    x, t = rng.normal(size=(11, width)), rng.normal(size=(11, 10))
    order = np.array([4, 0, 10, 7, 7, 1, 3, 9, 2, 5, 6], dtype=np.int32)
    x_dst, t_dst = device.zeros((8, width)), device.zeros((9, 10))  # a row past the end
    device.launch("gather_rows", (8 * (-(-width // 64) + 1),), 8, 2,
                  cl_array.to_device(device.queue, order), width, device.to_device(x), x_dst,
                  10, device.to_device(t), t_dst)()
    np.testing.assert_array_equal(x_dst.get(), x[order[2:10]].astype(device.dtype))
    np.testing.assert_array_equal(t_dst.get()[:8], t[order[2:10]].astype(device.dtype))
    assert not t_dst.get()[8:].any()
