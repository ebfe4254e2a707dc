"""The activations of Grenade's master and its fork: Sinusoid, Gelu (exact and the fork's fast
form), LeakyRelu, LeakyTanh. Kernels against numpy at odd sizes in both precisions, the layers
against torch (or a numpy transcription where torch has no such op) and finite differences in
float64, the fused per-example loop against layer-by-layer training, model files."""
from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import numeric_gradients, same_as_torch, tolerance

import grenade_py as g
from grenade_py.device import streaming_size

SIZES = [1, 3, 17, 257]


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def gelu(x):
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


# family: (layer, numpy forward, numpy derivative)
CASES = {
    "sinusoid": (g.Sinusoid(), np.sin, np.cos),
    "gelu": (g.Gelu(), gelu,
             lambda x: 0.5 * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))
             + x * np.exp(-x * x / 2) / math.sqrt(2 * math.pi)),
    "gelu_fast": (g.Gelu(approximate=True), lambda x: x * sigmoid(1.702 * x),
                  lambda x: sigmoid(1.702 * x) * (1 + 1.702 * x * (1 - sigmoid(1.702 * x)))),
    "leaky_relu": (g.LeakyRelu(0.1), lambda x: np.where(x < 0, 0.1 * x, x),
                   lambda x: np.where(x < 0, 0.1, 1.0)),
    "leaky_tanh": (g.LeakyTanh(0.7),
                   lambda x: np.where(x > 0.7, 0.7 + 0.05 * (x - 0.7),
                                      np.where(x < -0.7, -0.7 + 0.05 * (x + 0.7), x)),
                   lambda x: np.where(np.abs(x) > 0.7, 0.05, 1.0)),
}


@pytest.mark.parametrize("family", CASES)
@pytest.mark.parametrize("count", SIZES + [20011])  # 20011: more than a group of 1024 x 8
def test_activation_kernels_against_numpy(device, rng, family, count):
    layer, forward, derivative = CASES[family]
    x = rng.normal(scale=2, size=count)
    dy = rng.normal(size=count)
    extra = [device.dtype(getattr(layer, layer.argument))] if layer.argument else []
    y, dx = device.zeros((count,)), device.zeros((count,))
    x_dev = device.to_device(x)
    device.launch(f"{family}_forward", streaming_size(count), count, *extra, x_dev, y)()
    device.launch(f"{family}_backward", streaming_size(count), count, *extra, x_dev,
                  device.to_device(dy), dx)()
    x = x.astype(device.dtype).astype(np.float64)
    tol = tolerance(device, 4)
    np.testing.assert_allclose(y.get(), forward(x), **tol)
    np.testing.assert_allclose(dx.get(), derivative(x) * dy.astype(device.dtype), **tol)


@pytest.mark.parametrize("family", ["sinusoid", "gelu", "leaky_relu"])
def test_against_torch(device64, rng, family):
    torch = pytest.importorskip("torch", reason="torch is the oracle (pip install '.[test]')")
    layer, _, _ = CASES[family]
    net = g.Network([type(layer)(**{k: v for k, v in layer.spec().items() if k != "type"})],
                    input=g.D3(3, 5, 2), device=device64)
    x = rng.normal(scale=2, size=(4, 2, 3, 5))
    dy = rng.normal(size=x.shape)
    op = {"sinusoid": torch.sin, "gelu": torch.nn.functional.gelu,
          "leaky_relu": lambda t: torch.nn.functional.leaky_relu(t, 0.1)}[family]
    same_as_torch(net, op, x, dy, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("family", CASES)
def test_backward_against_finite_differences(device64, rng, family):
    layer, _, _ = CASES[family]
    fresh = type(layer)(**{k: v for k, v in layer.spec().items() if k != "type"})
    net = g.Network([g.FullyConnected(3, 5), fresh, g.FullyConnected(5, 2)], input=g.D1(3),
                    device=device64, seed=2)
    x, y = rng.normal(size=(4, 3)), rng.normal(size=(4, 2))

    def loss(n):
        return 0.5 * np.sum((g.run_net(n, x) - y) ** 2) / len(x)

    numeric = numeric_gradients(net, loss)
    for got, want in zip(g.back_propagate(net, x, y), numeric, strict=True):
        for name in want:
            np.testing.assert_allclose(got[name], want[name], rtol=1e-6, atol=1e-8)


def test_fused_loop_equals_layer_by_layer(device64, rng, monkeypatch):
    """Each new activation in the fused per-example loop (LeakyRelu and LeakyTanh give it their
    argument) trains as the layer-by-layer steps do."""
    def make():
        return g.Network([g.LeakyRelu(0.2), g.FullyConnected(3, 9), g.Sinusoid(),
                          g.FullyConnected(9, 7), g.Gelu(), g.FullyConnected(7, 5),
                          g.LeakyTanh(0.3), g.FullyConnected(5, 4), g.Gelu(approximate=True)],
                         input=g.D1(3), device=device64, seed=4)
    fused, plain = make(), make()
    assert g.execution.fused(fused, 1) is not None
    x, y = rng.normal(size=(200, 3)), rng.normal(size=(200, 4))
    g.train(fused, g.Adam(0.01), x, y, per_example=True)
    monkeypatch.setattr("grenade_py.execution.fused", lambda *args: None)
    g.train(plain, g.Adam(0.01), x, y, per_example=True)
    for a, b in zip(fused.get_parameters(), plain.get_parameters(), strict=True):
        for name in a:
            np.testing.assert_allclose(a[name], b[name], rtol=1e-10, atol=1e-12)


def test_model_files_and_checks(device64, tmp_path):
    net = g.Network([g.FullyConnected(2, 3), g.LeakyRelu(0.3), g.LeakyTanh(0.4),
                     g.Gelu(approximate=True), g.Sinusoid()], input=g.D1(2), device=device64,
                    seed=1)
    net.save(tmp_path / "m.gnpy")
    loaded = g.Network.load(tmp_path / "m.gnpy")
    assert repr(loaded) == repr(net) and "LeakyRelu 0.3, LeakyTanh 0.4, Gelu (approximate)" \
        in repr(net)
    x = np.random.default_rng(1).normal(size=(5, 2))
    np.testing.assert_array_equal(g.run_net(loaded, x), g.run_net(net, x))
    for make, message in ((lambda: g.LeakyRelu(-1), "alpha must be a finite number >= 0"),
                          (lambda: g.LeakyTanh(1.5), "maximum must be a number in \\(0, 1\\]"),
                          (lambda: g.Gelu(approximate="yes"), "approximate must be True")):
        with pytest.raises(ValueError, match=message):
            make()
