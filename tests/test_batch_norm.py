"""BatchNorm against numpy at odd sizes in both precisions, against PyTorch's BatchNorm1d and
BatchNorm2d in float64 (training and inference outputs, every gradient, the running statistics
after several steps), finite differences, model files, and per-example training."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import numeric_gradients, same_as_torch, tolerance

import grenade_py as g


def reference(x, gamma, beta, eps, dy):
    """Training forward and backward of a batch x (N, C, P) in numpy: y, dx, dgamma, dbeta."""
    mean = x.mean(axis=(0, 2), keepdims=True)
    var = x.var(axis=(0, 2), keepdims=True)
    xhat = (x - mean) / np.sqrt(var + eps)
    g_, b_ = gamma[None, :, None], beta[None, :, None]
    dxhat = dy * g_
    dx = (dxhat - dxhat.mean(axis=(0, 2), keepdims=True)
          - xhat * (dxhat * xhat).mean(axis=(0, 2), keepdims=True)) / np.sqrt(var + eps)
    return g_ * xhat + b_, dx, (dy * xhat).sum(axis=(0, 2)), dy.sum(axis=(0, 2))


def shape_of(c, p):
    return g.D1(c) if p == 1 else g.D3(p, 1, c)


@pytest.mark.parametrize(("n", "c", "p"), [(2, 1, 1), (3, 17, 1), (70, 9, 1), (5, 3, 7),
                                           (4, 5, 24), (2, 1, 257)])
def test_against_numpy(device, rng, n, c, p):
    """Training forward and backward, the running statistics after it and inference from them:
    runs of 8 values and shorter ones, rows of features (D1) in runs of 8 and fewer, more runs
    than a channel's work-group has work-items."""
    net = g.Network([g.BatchNorm(c)], input=shape_of(c, p), device=device, seed=1)
    gamma, beta = rng.normal(size=c), rng.normal(size=c)
    net.set_parameters([{"gamma": gamma, "beta": beta}])
    x = rng.normal(loc=2, scale=3, size=(n, c, p))
    dy = rng.normal(size=x.shape)
    dims = (n, *net.input_shape.dims)
    tapes, y = g.run_network(net, x.reshape(dims))
    _, dx = g.run_gradient(net, tapes, dy.reshape(dims))
    want_y, want_dx, dgamma, dbeta = reference(x, gamma, beta, 1e-5, dy)
    tol = tolerance(device, n * p) | ({"rtol": 1e-3} if device.precision == "float32" else {})
    np.testing.assert_allclose(y.reshape(x.shape), want_y, **tol)
    np.testing.assert_allclose(dx.reshape(x.shape), want_dx, **tol)
    grads = net.layers[0].gradients
    np.testing.assert_allclose(grads["gamma"].get(), dgamma, **tol)
    np.testing.assert_allclose(grads["beta"].get(), dbeta, **tol)
    state = net.layers[0].get_state()
    means, variances = x.mean(axis=(0, 2)), x.var(axis=(0, 2), ddof=1)
    np.testing.assert_allclose(state["running_mean"], 0.1 * means, **tol)
    np.testing.assert_allclose(state["running_var"], 0.9 + 0.1 * variances, **tol)
    rm, rv = (np.array(state[k])[None, :, None] for k in ("running_mean", "running_var"))
    want = gamma[None, :, None] * (x - rm) / np.sqrt(rv + 1e-5) + beta[None, :, None]
    np.testing.assert_allclose(g.run_net(net, x.reshape(dims)).reshape(x.shape), want, **tol)


@pytest.mark.parametrize("image", [False, True])
def test_against_torch(device64, rng, image):
    torch = pytest.importorskip("torch", reason="torch is the oracle (pip install '.[test]')")
    c = 3
    shape = g.D3(4, 5, c) if image else g.D1(c)
    net = g.Network([g.BatchNorm(c, eps=1e-3, momentum=0.2)], input=shape, device=device64)
    module = (torch.nn.BatchNorm2d if image else torch.nn.BatchNorm1d)(
        c, eps=1e-3, momentum=0.2).double()
    gamma, beta = rng.normal(size=c), rng.normal(size=c)
    net.set_parameters([{"gamma": gamma, "beta": beta}])
    with torch.no_grad():
        module.weight.copy_(torch.tensor(gamma))
        module.bias.copy_(torch.tensor(beta))
    for step in range(3):  # the running statistics move with every training forward pass
        x = rng.normal(loc=step, scale=2, size=(6, *shape.dims))
        module.zero_grad()
        same_as_torch(net, module, x, rng.normal(size=x.shape), rtol=1e-10, atol=1e-12)
        grads = net.layers[0].gradients
        np.testing.assert_allclose(grads["gamma"].get(), module.weight.grad.numpy(),
                                   rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(grads["beta"].get(), module.bias.grad.numpy(), rtol=1e-10,
                                   atol=1e-12)
    state = net.layers[0].get_state()
    np.testing.assert_allclose(state["running_mean"], module.running_mean.numpy(), rtol=1e-10)
    np.testing.assert_allclose(state["running_var"], module.running_var.numpy(), rtol=1e-10)
    module.eval()
    x = rng.normal(size=(4, *shape.dims))
    np.testing.assert_allclose(g.run_net(net, x), module(torch.tensor(x)).detach().numpy(),
                               rtol=1e-10, atol=1e-12)


def test_backward_against_finite_differences(device64, rng):
    net = g.Network([g.FullyConnected(3, 4), g.BatchNorm(4), g.Tanh(), g.FullyConnected(4, 2)],
                    input=g.D1(3), device=device64, seed=3)
    params = net.get_parameters()
    params[1] = {"gamma": rng.normal(size=4), "beta": rng.normal(size=4)}
    net.set_parameters(params)
    x, y = rng.normal(size=(5, 3)), rng.normal(size=(5, 2))

    def loss(n):  # the training forward pass: batch statistics
        _, out = g.run_network(n, x)
        return 0.5 * np.sum((out - y) ** 2) / len(x)

    numeric = numeric_gradients(net, loss)
    for got, want in zip(g.back_propagate(net, x, y), numeric, strict=True):
        for name in want:
            np.testing.assert_allclose(got[name], want[name], rtol=1e-6, atol=1e-8)


RELU_AFTER = {
    "channels": (g.D3(5, 10, 2), lambda: [
        g.Convolution(2, 3, 3, 3, 1, 1), g.BatchNorm(3), g.Relu(), g.Reshape(),
        g.FullyConnected(72, 2)]),
    # the FullyConnected layer after the Relu runs its backward pass instead
    "features": (g.D1(3), lambda: [
        g.FullyConnected(3, 5), g.BatchNorm(5), g.Relu(), g.FullyConnected(5, 2)]),
    "last": (g.D1(3), lambda: [g.FullyConnected(3, 4), g.BatchNorm(4), g.Relu()]),
    "first": (g.D1(3), lambda: [g.BatchNorm(3), g.Relu(), g.FullyConnected(3, 2)]),
}


@pytest.mark.parametrize("name", RELU_AFTER)
def test_a_relu_after_it_runs_in_its_launches(device, rng, name, monkeypatch):
    """A Relu after a BatchNorm runs in its launches (Series.relu_fused): its output in
    batchnorm_normalise, its backward pass in the backward kernels (unless the layer after the
    Relu runs that): the outputs, gradients and a step's weights to the bit of the Relu's own
    kernels; the gradients equal finite differences (float64)."""
    from grenade_py.layers.series import Series

    shape, layers = RELU_AFTER[name]
    x, y = rng.normal(size=(6, *shape.dims)), rng.normal(size=(6, 2 if name != "last" else 4))
    results = []
    for fused in (True, False):
        if not fused:
            monkeypatch.setattr(Series, "relu_fused", lambda self, i, relu, rows, kept=(
                Series.relu_fused): None if type(self.layers[i]) is g.BatchNorm else kept(
                self, i, relu, rows))
        net = g.Network(layers(), input=shape, device=device, seed=3)
        names = [launch.kernel.function_name for launch in
                 g.execution.steps(net, 6).forward_launches(True)]
        assert ("relu_forward" in names) != fused
        _, out = g.run_network(net, x)
        grads = g.back_propagate(net, x, y)
        backward = [launch.kernel.function_name for launch in
                    g.execution.steps(net, 6).backward_launches()]
        g.train(net, g.SGD(0.05), x, y)
        results.append((out, grads, net.get_parameters(), backward))
    (out, grads, after, backward), (out_apart, grads_apart, after_apart, _) = results
    assert "relu_backward" not in backward
    np.testing.assert_array_equal(out, out_apart)
    for got, want in zip(grads + after, grads_apart + after_apart, strict=True):
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])
    if device.precision == "float64":
        monkeypatch.undo()
        net = g.Network(layers(), input=shape, device=device, seed=3)

        def loss(n):  # the training forward pass: batch statistics
            return 0.5 * np.sum((g.run_network(n, x)[1] - y) ** 2) / len(x)

        numeric = numeric_gradients(net, loss)
        for got, want in zip(g.back_propagate(net, x, y), numeric, strict=True):
            for key in want:
                np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-7)


def test_model_files_keep_the_running_statistics(device64, rng, tmp_path):
    net = g.Network([g.Convolution(1, 3, 3, 3, 1, 1), g.BatchNorm(3), g.Relu()],
                    input=g.D2(6, 6), device=device64, seed=1)
    g.fit(net, g.Adam(0.01), rng.normal(size=(16, 6, 6)), rng.normal(size=(16, 3, 4, 4)),
          batch_size=8, epochs=2)
    assert net.layers[1].get_state()["running_mean"] != [0.0, 0.0, 0.0]
    net.save(tmp_path / "bn.gnpy")
    loaded = g.Network.load(tmp_path / "bn.gnpy")
    assert loaded.layers[1].get_state() == net.layers[1].get_state()
    x = rng.normal(size=(3, 6, 6))
    np.testing.assert_array_equal(g.run_net(loaded, x), g.run_net(net, x))


def test_per_example_training(device64, rng):
    """On D1 one row has no variance: refused, saying why. On D3 the positions give one."""
    flat = g.Network([g.FullyConnected(3, 4), g.BatchNorm(4)], input=g.D1(3), device=device64)
    with pytest.raises(ValueError, match="cannot train on one row at a time"):
        g.train(flat, g.SGD(0.1), rng.normal(size=(5, 3)), rng.normal(size=(5, 4)),
                per_example=True)
    image = g.Network([g.BatchNorm(2), g.Reshape(), g.FullyConnected(18, 1)],
                      input=g.D3(3, 3, 2), device=device64, seed=1)
    before = image.get_parameters()[0]["gamma"]
    g.train(image, g.SGD(0.1), rng.normal(size=(5, 2, 3, 3)), rng.normal(size=(5, 1)),
            per_example=True)
    assert image.steps == 5 and not np.array_equal(image.get_parameters()[0]["gamma"], before)


def test_bad_arguments_and_shapes(device64):
    for make, message in ((lambda: g.BatchNorm(0), "channels must be a positive int"),
                          (lambda: g.BatchNorm(3, eps=0), "eps must be a finite number > 0"),
                          (lambda: g.BatchNorm(3, momentum=2), "momentum must be at most 1")):
        with pytest.raises(ValueError, match=message):
            make()
    with pytest.raises(g.ShapeError, match="takes D1 3 or D3 with 3 channels"):
        g.Network([g.BatchNorm(3)], input=g.D2(3, 3), device=device64)


def test_fit_refuses_a_last_batch_of_one_row_before_training(device64, rng):
    """Saying that the last batch is the one: the batch size the caller gave is 2 or more."""
    net = g.Network([g.FullyConnected(3, 4), g.BatchNorm(4)], input=g.D1(3), device=device64)
    before = net.get_parameters()
    with pytest.raises(ValueError, match=r"^the last batch of each epoch has 1 example \(7 in "
                       r"batches of 3: choose a batch_size that leaves more\), and BatchNorm 4 "
                       r"on D1 4 cannot train on one row at a time"):
        g.fit(net, g.SGD(0.1), rng.normal(size=(7, 3)), rng.normal(size=(7, 4)), batch_size=3)
    with pytest.raises(ValueError, match=r"^BatchNorm 4 on D1 4 cannot train on one row"):
        g.fit(net, g.SGD(0.1), rng.normal(size=(7, 3)), rng.normal(size=(7, 4)), batch_size=1)
    assert net.steps == 0
    np.testing.assert_array_equal(net.get_parameters()[0]["weights"], before[0]["weights"])
