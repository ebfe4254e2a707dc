"""A plain numpy transcription of Grenade's maths: the oracle for tests and the numpy column of
the benchmark. Same layers (branches and nested networks included), same loss gradient
(output - target), same descent rule. Batches are (N, *shape.dims), D3 channel-major."""
from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from grenade_py.optimizers import SGD

Params = dict[str, np.ndarray]


def _erf(x: np.ndarray) -> np.ndarray:
    return np.vectorize(math.erf, otypes=[float])(x)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def _forward(kind: str, x: np.ndarray, spec: dict[str, Any] | None = None) -> np.ndarray:
    spec = spec or {}
    if kind == "Sinusoid":
        return np.sin(x)
    if kind == "Gelu":
        return x * _sigmoid(1.702 * x) if spec.get("approximate") else \
            0.5 * x * (1 + _erf(x / math.sqrt(2)))
    if kind == "LeakyRelu":
        return np.where(x < 0, spec.get("alpha", 0.02) * x, x)
    if kind == "LeakyTanh":
        m = spec.get("maximum", 0.995)
        return np.where(x > m, m + 0.05 * (x - m), np.where(x < -m, -m + 0.05 * (x + m), x))
    if kind == "Tanh":
        return np.tanh(x)
    if kind == "Relu":
        return np.where(x > 0, x, 0.0)
    if kind == "Logit":
        return 1 / (1 + np.exp(-x))
    if kind == "Softmax":
        e = np.exp(x - x.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    if kind == "Trivial":
        return x.copy()
    if kind == "Elu":
        return np.where(x > 0, x, np.expm1(np.minimum(x, 0)))
    raise ValueError(f"no numpy reference for {kind}")


def _backward(kind: str, x: np.ndarray, y: np.ndarray, dy: np.ndarray,
              spec: dict[str, Any] | None = None) -> np.ndarray:
    spec = spec or {}
    if kind == "Sinusoid":
        return np.cos(x) * dy
    if kind == "Gelu":
        if spec.get("approximate"):
            s = _sigmoid(1.702 * x)
            return (s + 1.702 * x * s * (1 - s)) * dy
        return (0.5 * (1 + _erf(x / math.sqrt(2)))
                + x * np.exp(-x * x / 2) / math.sqrt(2 * math.pi)) * dy
    if kind == "LeakyRelu":
        return np.where(x < 0, spec.get("alpha", 0.02) * dy, dy)
    if kind == "LeakyTanh":
        return np.where(np.abs(x) > spec.get("maximum", 0.995), 0.05 * dy, dy)
    if kind == "Tanh":
        s = np.tanh(x)
        return (1 - s * s) * dy
    if kind == "Relu":
        return np.where(x > 0, dy, 0.0)
    if kind == "Logit":
        return y * (1 - y) * dy
    if kind == "Softmax":
        return y * (dy - (dy * y).sum(axis=1, keepdims=True))
    if kind == "Trivial":
        return dy.copy()
    if kind == "Elu":
        return np.where(x > 0, dy, np.exp(np.minimum(x, 0)) * dy)
    raise ValueError(f"no numpy reference for {kind}")


def part(params: Params, key: str) -> Params:
    prefix = key + "."
    return {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}


def batch_norm(spec: dict[str, Any], p: Params, x: np.ndarray, training: bool
               ) -> tuple[np.ndarray, Any]:
    """BatchNorm (PyTorch's BatchNorm1d/2d) over x (N, C) or (N, C, H, W): batch statistics
    while training, moving the running ones (kept in `spec`, from mean 0 and variance 1) by
    its momentum towards the batch's mean and unbiased variance; else the running ones."""
    axes = (0,) if x.ndim == 2 else (0, 2, 3)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    c, eps, momentum = spec["channels"], spec.get("eps", 1e-5), spec.get("momentum", 0.1)
    running = spec.setdefault("running", [np.zeros(c), np.ones(c)])
    if training:
        mean, var = x.mean(axis=axes), x.var(axis=axes)
        count = x.size // c
        running[0] = (1 - momentum) * running[0] + momentum * mean
        running[1] = (1 - momentum) * running[1] + momentum * var * count / (count - 1)
    else:
        mean, var = running
    inv_std = 1 / np.sqrt(var + eps)
    normal = (x - mean.reshape(shape)) * inv_std.reshape(shape)
    return p["gamma"].reshape(shape) * normal + p["beta"].reshape(shape), (normal, inv_std, axes)


def forward(spec: dict[str, Any], p: Params, x: np.ndarray, training: bool = False
            ) -> tuple[np.ndarray, Any]:
    """A layer's output for batch x, and the tape its backward pass needs (`training`: as in
    train/fit, else as in run_net)."""
    kind = spec["type"]
    if kind == "FullyConnected":
        return x @ p["weights"].T + p["bias"], x
    if kind == "BatchNorm":
        return batch_norm(spec, p, x, training)
    if kind in ("Series", "Network"):
        tapes = []
        for i, child in enumerate(spec["layers"]):
            x, tape = forward(child, part(p, str(i)), x, training)
            tapes.append(tape)
        return x, tapes
    if kind in ("Concat", "Merge"):
        ya, ta = forward(spec["a"], part(p, "a"), x, training)
        yb, tb = forward(spec["b"], part(p, "b"), x, training)
        if kind == "Merge":
            y = ya + yb
        else:
            y = np.stack([ya, yb], axis=1) if spec["stacked"] else np.concatenate([ya, yb], 1)
        return y, (ta, tb, ya.shape)
    y = _forward(kind, x, spec)
    return y, (x, y)


def backward(spec: dict[str, Any], p: Params, tape: Any,
             dy: np.ndarray) -> tuple[Params, np.ndarray]:
    """A layer's parameter gradients (summed over the batch, keyed by path) and input delta."""
    kind = spec["type"]
    if kind == "FullyConnected":
        return {"weights": dy.T @ tape, "bias": dy.sum(axis=0)}, dy @ p["weights"]
    if kind == "BatchNorm":  # the batch statistics' own gradients included
        normal, inv_std, axes = tape
        shape = (1, -1) + (1,) * (dy.ndim - 2)
        dgamma, dbeta = (dy * normal).sum(axis=axes), dy.sum(axis=axes)
        count = dy.size // len(dbeta)
        dx = (p["gamma"] * inv_std).reshape(shape) / count * (
            count * dy - dbeta.reshape(shape) - normal * dgamma.reshape(shape))
        return {"gamma": dgamma, "beta": dbeta}, dx
    if kind in ("Series", "Network"):
        grads: Params = {}
        for i in reversed(range(len(spec["layers"]))):
            g, dy = backward(spec["layers"][i], part(p, str(i)), tape[i], dy)
            grads |= {f"{i}.{k}": v for k, v in g.items()}
        return grads, dy
    if kind in ("Concat", "Merge"):
        ta, tb, shape_a = tape
        if kind == "Merge":
            dya, dyb = dy, dy
        elif spec["stacked"]:
            dya, dyb = dy[:, 0], dy[:, 1]
        else:
            dya, dyb = dy[:, :shape_a[1]], dy[:, shape_a[1]:]
        ga, dxa = backward(spec["a"], part(p, "a"), ta, dya)
        gb, dxb = backward(spec["b"], part(p, "b"), tb, dyb)
        return {f"a.{k}": v for k, v in ga.items()} | {f"b.{k}": v for k, v in gb.items()}, \
            dxa + dxb
    x, y = tape
    return {}, _backward(kind, x, y, dy, spec)


def descend(w: np.ndarray, m: np.ndarray, g: np.ndarray,
            lp: SGD) -> tuple[np.ndarray, np.ndarray]:
    """Grenade's descend loop: m' = momentum m - rate g; w' = w + m' - (rate l2) w."""
    m2 = lp.momentum * m - lp.rate * g
    return w + m2 - (lp.rate * lp.l2) * w, m2


def adam(w: np.ndarray, m: np.ndarray, v: np.ndarray, g: np.ndarray, t: int, rate: float,
         beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.0,
         decoupled: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Step t (from 1) of torch.optim.Adam (`decoupled`: AdamW), as its single-tensor loop
    writes it: (w', m', v')."""
    if decoupled:
        w = w * (1 - rate * weight_decay)
    else:
        g = g + weight_decay * w
    m = m + (1 - beta1) * (g - m)
    v = v * beta2 + (1 - beta2) * g * g
    step = rate / (1 - beta1 ** t)
    return w - step * m / (np.sqrt(v) / np.sqrt(1 - beta2 ** t) + eps), m, v


class NumpyNetwork:
    """A network of layer specs (`layer.spec()`, or just type names such as "Tanh") with
    parameters as given by `Network.get_parameters()`; batches are (N, *shape.dims)."""

    def __init__(self, layers: Sequence[dict[str, Any] | str],
                 parameters: Sequence[Params], dtype: type = np.float64) -> None:
        self.specs = [{"type": s} if isinstance(s, str) else copy.deepcopy(s) for s in layers]
        self.parameters: list[Params] = [
            {k: np.array(v, dtype=dtype) for k, v in p.items()} for p in parameters]
        self.momentum = [{k: np.zeros_like(v) for k, v in p.items()} for p in self.parameters]

    def forward(self, x: np.ndarray) -> list[np.ndarray]:
        """Every activation, input first, as run_net computes them."""
        acts = [x]
        for spec, p in zip(self.specs, self.parameters, strict=True):
            acts.append(forward(spec, p, acts[-1])[0])
        return acts

    def gradients(self, x: np.ndarray, y: np.ndarray,
                  loss: str = "squared_error") -> list[Params]:
        """Gradients of every layer, averaged over the batch, for Grenade's output - target, or
        with "cross_entropy" (last layer Softmax) for p - t at the logits."""
        acts, tapes = [x], []
        for spec, p in zip(self.specs, self.parameters, strict=True):
            out, tape = forward(spec, p, acts[-1], training=True)
            acts.append(out)
            tapes.append(tape)
        delta = (acts[-1] - y) * (1.0 / len(x))
        grads: list[Params] = [{} for _ in self.specs]
        last = len(self.specs) - (1 if loss == "cross_entropy" else 0)
        for i in reversed(range(last)):
            grads[i], delta = backward(self.specs[i], self.parameters[i], tapes[i], delta)
        return grads

    def update(self, grads: list[Params], lp: SGD) -> None:
        for p, m, g in zip(self.parameters, self.momentum, grads, strict=True):
            for name in g:
                p[name], m[name] = descend(p[name], m[name], g[name], lp)

    def train(self, x: np.ndarray, y: np.ndarray, lp: SGD,
              loss: str = "squared_error") -> None:
        """One step on the batch's averaged gradient."""
        self.update(self.gradients(x, y, loss), lp)

    def train_per_example(self, xs: np.ndarray, ys: np.ndarray, lp: SGD,
                          loss: str = "squared_error") -> None:
        """Grenade's foldl' train: one step per example, in order."""
        for i in range(len(xs)):
            self.train(xs[i:i + 1], ys[i:i + 1], lp, loss)

    def fit(self, x: np.ndarray, y: np.ndarray, lp: SGD, batch_size: int,
            epochs: int, seed: int | None, loss: str = "squared_error") -> None:
        """`grenade_py.fit`'s steps: each epoch a permutation drawn from one seeded generator,
        then averaged steps over consecutive batches of it (the last may be smaller)."""
        rng = np.random.default_rng(seed)
        for _ in range(epochs):
            order = rng.permutation(len(x))
            for start in range(0, len(x), batch_size):
                rows = order[start:start + batch_size]
                self.train(x[rows], y[rows], lp, loss)
