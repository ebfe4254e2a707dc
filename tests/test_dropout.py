"""Dropout: real inverted dropout while training (Grenade's is a stub), the identity at inference,
masks reproducible from the network's seed."""
from __future__ import annotations

import numpy as np
import pytest

from grenade_py import (
    D1,
    D3,
    Dropout,
    FullyConnected,
    LearningParameters,
    Network,
    execution,
    run_net,
    train,
)


def forward_backward(net, x, dy):
    """One training forward pass and the backward pass of its last layer from dy: y, dx."""
    plan = execution.steps(net, len(x))
    plan.input.set(np.asarray(x, dtype=net.device.dtype))
    plan.delta.set(np.asarray(dy, dtype=net.device.dtype))
    dx = net.device.zeros(plan.input.shape)
    for launch in plan.forward_launches(True) + net.backward(len(x), plan.input, plan.output,
                                                         plan.delta, dx, plan.buffers):
        launch()
    return plan.output.get(), dx.get()


@pytest.mark.parametrize("rate", [0.0, 0.25, 0.7])
def test_dropout_masks(device, rate):
    net = Network([Dropout(rate)], input=D3(16, 16, 4), device=device, seed=1)
    x = np.random.default_rng(2).uniform(1, 2, size=(8, 4, 16, 16))
    dy = np.random.default_rng(3).normal(size=x.shape)
    y, dx = forward_backward(net, x, dy)
    kept = y != 0
    assert abs(kept.mean() - (1 - rate)) < 0.02  # 8192 draws
    np.testing.assert_allclose(y[kept], x[kept] / (1 - rate), rtol=1e-6)
    np.testing.assert_allclose(dx, np.where(kept, dy / (1 - rate), 0), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(run_net(net, x), x.astype(device.dtype))  # inference: identity
    y2, _ = forward_backward(net, x, dy)
    assert rate == 0 or not np.array_equal(y2 != 0, kept)  # each step its own mask


def test_dropout_is_reproducible_from_the_seed(device64):
    """The masks come from the network's seed alone: with the same starting weights (set
    alike, so they cannot be what differs), the same seed trains to the same weights and
    another seed to other weights."""
    start = None

    def run(seed):
        nonlocal start
        net = Network([FullyConnected(5, 30), Dropout(0.5), FullyConnected(30, 2)], input=D1(5),
                      device=device64, seed=seed)
        start = start or net.get_parameters()
        net.set_parameters(start)
        rng = np.random.default_rng(4)
        for _ in range(3):
            train(net, LearningParameters(0.01), rng.normal(size=(9, 5)), rng.normal(size=(9, 2)))
        train(net, LearningParameters(0.01), rng.normal(size=(20, 5)), rng.normal(size=(20, 2)),
              per_example=True)
        weights = net.get_parameters()[0]["weights"]
        assert np.all(np.isfinite(weights))  # (NaN != NaN would pass what follows)
        return weights

    np.testing.assert_array_equal(run(7), run(7))
    assert not np.array_equal(run(7), run(8))


def test_dropout_rate_is_checked():
    for rate in (-0.1, 1.0, "0.5"):
        with pytest.raises(ValueError, match="Dropout rate"):
            Dropout(rate)


def test_dropout_in_a_model_file(device64, tmp_path):
    net = Network([FullyConnected(3, 4), Dropout(0.3), FullyConnected(4, 1)], input=D1(3),
                  device=device64, seed=2)
    net.save(tmp_path / "m")
    loaded = Network.load(tmp_path / "m", device=device64)
    assert repr(loaded.layers[1]) == "Dropout 0.3"
    x = np.random.default_rng(1).normal(size=(5, 3))
    np.testing.assert_array_equal(run_net(loaded, x), run_net(net, x))
