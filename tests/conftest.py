"""Shared fixtures: one Device per precision for the whole session (builds are cached)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from grenade_py.device import Device

MNIST_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "mnist"

#: The folder of PoCL's kernel cache for this test session (PoCL's own default, unless
#: POCL_CACHE_DIR says otherwise).
POCL_CACHE = os.environ.get("POCL_CACHE_DIR") or str(
    Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pocl" / "kcache")


def cache_env(folder: Path) -> dict[str, str]:
    """A child process's environment whose user cache folder is `folder` (grenade_py's
    tuned.json and compilers.json go there) but whose PoCL kernel cache is the session's: moving
    PoCL's with XDG_CACHE_HOME would compile every kernel anew (10-20 s a child)."""
    return {**os.environ, "XDG_CACHE_HOME": str(folder), "POCL_CACHE_DIR": POCL_CACHE}


_devices: dict[str, Device] = {}


def get_device(precision: str) -> Device:
    if precision not in _devices:
        _devices[precision] = Device(precision=precision)
    return _devices[precision]


@pytest.fixture(params=["float32", "float64"])
def device(request: pytest.FixtureRequest) -> Device:
    """The default OpenCL device, once in each precision."""
    return get_device(request.param)


@pytest.fixture
def device64() -> Device:
    return get_device("float64")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def tolerance(device: Device, terms: int = 257) -> dict[str, float]:
    """assert_allclose tolerances for sums of up to `terms` products of unit-scale values in the
    device precision: rounding grows with the number of terms, so atol does too."""
    eps = float(np.finfo(device.dtype).eps)
    return {"rtol": 1e-4 if device.precision == "float32" else 1e-11, "atol": 4 * eps * terms}


#: assert_allclose's tolerances where two paths sum in other orders (on a GPU, the fused loop's
#: lanes share a row's sum where the tiled GEMMs sum in order of k; the GPU forms against the CPU
#: forms): float64 to rounding; float32 to what a float32 sum in another order moves over a few
#: hundred steps (Adam's, 600 float32 steps on an H200: weights 2.7e-6 apart, relative).
ORDER_TOLERANCE = {"float64": {"rtol": 1e-8, "atol": 1e-10},
                   "float32": {"rtol": 2e-4, "atol": 2e-5}}


def assert_equal_or_close(a: np.ndarray, b: np.ndarray, exact: bool, err_msg: str = "") -> None:
    """`a` equal to `b` to the bit where `exact`, else to ORDER_TOLERANCE of `b`'s precision."""
    if exact:
        np.testing.assert_array_equal(a, b, err_msg=err_msg)
    else:
        np.testing.assert_allclose(a, b, **ORDER_TOLERANCE[b.dtype.name], err_msg=err_msg)


def numeric_gradients(net, loss, eps: float = 1e-6) -> list[dict[str, np.ndarray]]:
    """Central differences of `loss(net)` for every parameter of `net`, shaped as
    `net.get_parameters()`; leaves the parameters as they were."""
    params = net.get_parameters()
    result: list[dict[str, np.ndarray]] = []
    for layer_params in params:
        result.append({})
        for name, value in layer_params.items():
            numeric = np.zeros_like(value)
            for k in np.ndindex(value.shape):
                original = value[k]
                value[k] = original + eps
                net.set_parameters(params)
                up = loss(net)
                value[k] = original - eps
                net.set_parameters(params)
                numeric[k] = (up - loss(net)) / (2 * eps)
                value[k] = original
            result[-1][name] = numeric
    net.set_parameters(params)
    return result


def same_as_torch(net, op, x, dy, rtol: float, atol: float) -> None:
    """The training forward pass of `net` on x, and its backward pass from dy, equal torch's
    autograd through `op` (a function of a torch tensor)."""
    import torch

    from grenade_py import run_gradient, run_network

    tx = torch.tensor(x, requires_grad=True)
    ty = op(tx)
    ty.backward(torch.tensor(dy))
    tapes, y = run_network(net, x)
    _, dx = run_gradient(net, tapes, dy)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=rtol, atol=atol)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=rtol, atol=atol)
