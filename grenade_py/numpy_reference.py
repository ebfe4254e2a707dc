"""A plain numpy transcription of Grenade's maths: the oracle for tests and the numpy column of
the benchmark. Same layers, same loss gradient (output - target), same descent rule."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from grenade_py.learning import LearningParameters


def _forward(kind: str, x: np.ndarray) -> np.ndarray:
    if kind == "Tanh":
        return np.tanh(x)
    if kind == "Relu":
        return np.where(x > 0, x, 0.0)
    if kind == "Logit":
        return 1 / (1 + np.exp(-x))
    if kind == "Softmax":
        e = np.exp(x - x.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    raise ValueError(f"no numpy reference for {kind}")


def _backward(kind: str, x: np.ndarray, y: np.ndarray, dy: np.ndarray) -> np.ndarray:
    if kind == "Tanh":
        s = np.tanh(x)
        return (1 - s * s) * dy
    if kind == "Relu":
        return np.where(x > 0, dy, 0.0)
    if kind == "Logit":
        return y * (1 - y) * dy
    if kind == "Softmax":
        return y * (dy - (dy * y).sum(axis=1, keepdims=True))
    raise ValueError(f"no numpy reference for {kind}")


def descend(w: np.ndarray, m: np.ndarray, g: np.ndarray,
            lp: LearningParameters) -> tuple[np.ndarray, np.ndarray]:
    """Grenade's descend loop: m' = momentum m - rate g; w' = w + m' - (rate l2) w."""
    m2 = lp.momentum * m - lp.rate * g
    return w + m2 - (lp.rate * lp.l2) * w, m2


class NumpyNetwork:
    """A network of layer kinds ("FullyConnected", "Tanh", ...) with parameters as given by
    `Network.get_parameters()`; batches are (N, features)."""

    def __init__(self, kinds: Sequence[str], parameters: Sequence[dict[str, np.ndarray]],
                 dtype: type = np.float64) -> None:
        self.kinds = list(kinds)
        self.parameters: list[dict[str, np.ndarray]] = [
            {k: np.array(v, dtype=dtype) for k, v in p.items()} for p in parameters]
        self.momentum = [{k: np.zeros_like(v) for k, v in p.items()} for p in self.parameters]

    def forward(self, x: np.ndarray) -> list[np.ndarray]:
        """Every activation, input first."""
        acts = [x]
        for kind, p in zip(self.kinds, self.parameters, strict=True):
            x = x @ p["weights"].T + p["bias"] if kind == "FullyConnected" else _forward(kind, x)
            acts.append(x)
        return acts

    def gradients(self, x: np.ndarray, y: np.ndarray,
                  loss: str = "squared_error") -> list[dict[str, np.ndarray]]:
        """Gradients of every layer, averaged over the batch, for Grenade's output - target, or
        with "cross_entropy" (last layer Softmax) for p - t at the logits."""
        acts = self.forward(x)
        delta = (acts[-1] - y) * (1.0 / len(x))
        grads: list[dict[str, np.ndarray]] = [{} for _ in self.kinds]
        last = len(self.kinds) - (1 if loss == "cross_entropy" else 0)
        for i in reversed(range(last)):
            kind = self.kinds[i]
            if kind == "FullyConnected":
                grads[i] = {"weights": delta.T @ acts[i], "bias": delta.sum(axis=0)}
                delta = delta @ self.parameters[i]["weights"]
            else:
                delta = _backward(kind, acts[i], acts[i + 1], delta)
        return grads

    def update(self, grads: list[dict[str, np.ndarray]], lp: LearningParameters) -> None:
        for p, m, g in zip(self.parameters, self.momentum, grads, strict=True):
            for name in g:
                p[name], m[name] = descend(p[name], m[name], g[name], lp)

    def train(self, x: np.ndarray, y: np.ndarray, lp: LearningParameters,
              loss: str = "squared_error") -> None:
        """One step on the batch's averaged gradient."""
        self.update(self.gradients(x, y, loss), lp)

    def train_per_example(self, xs: np.ndarray, ys: np.ndarray, lp: LearningParameters) -> None:
        """Grenade's foldl' train: one step per example, in order."""
        for i in range(len(xs)):
            self.train(xs[i:i + 1], ys[i:i + 1], lp)
