"""Every layer's backward pass against central finite differences (float64), through
back_propagate, whose loss is 0.5 * sum((output - target)^2) / batch."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import numeric_gradients

from grenade_py import D1, FullyConnected, Logit, Network, Relu, Tanh, back_propagate, run_net


def loss(net, x, y):
    return 0.5 * np.sum((run_net(net, x) - y) ** 2) / len(x)


def finite_difference_check(net, x, y):
    """Compare every parameter's gradient with central differences."""
    grads = back_propagate(net, x, y)
    numeric = numeric_gradients(net, lambda n: loss(n, x, y))
    checked = 0
    for index, layer_numeric in enumerate(numeric):
        for name, value in layer_numeric.items():
            np.testing.assert_allclose(grads[index][name], value, rtol=1e-6, atol=1e-8,
                                       err_msg=f"layer {index} {name}")
            checked += value.size
    assert checked > 0


@pytest.mark.parametrize("activation", [Tanh, Relu, Logit])
@pytest.mark.parametrize("n", [1, 4])
def test_activation_backward_through_fc(device64, rng, activation, n):
    """The activation's backward pass shapes the FullyConnected gradient before it."""
    net = Network([FullyConnected(3, 5), activation()], input=D1(3), device=device64, seed=1)
    x, y = rng.normal(size=(n, 3)), rng.normal(size=(n, 5))
    finite_difference_check(net, x, y)


@pytest.mark.parametrize("n", [1, 3])
def test_fully_connected_backward(device64, rng, n):
    net = Network([FullyConnected(4, 3), FullyConnected(3, 2)], input=D1(4), device=device64,
                  seed=2)
    finite_difference_check(net, rng.normal(size=(n, 4)), rng.normal(size=(n, 2)))


def test_random_network_gradient(device64, rng):
    """A deeper network mixing every layer, at odd widths."""
    net = Network([FullyConnected(3, 7), Tanh(), FullyConnected(7, 1), Logit(),
                   FullyConnected(1, 5), Relu(), FullyConnected(5, 2), Tanh()],
                  input=D1(3), device=device64, seed=3, init="grenade")
    finite_difference_check(net, rng.normal(size=(3, 3)), rng.normal(size=(3, 2)))


def test_fully_connected_rejects_bad_sizes():
    with pytest.raises(ValueError, match="positive int"):
        FullyConnected(0, 3)
    with pytest.raises(ValueError, match="positive int"):
        FullyConnected(2, 1.5)
