"""A plain numpy transcription of Grenade's recurrent half, step by step as Grenade runs it
(Grenade.Recurrent.Core.Runner and .Network, Layers.LSTM, Layers.BasicRecurrent): the oracle for
the device's layer-by-layer runner. Parameters are named as RecurrentNetwork.get_parameters()
gives them; vectors are 1-D, one step at a time."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from grenade_py.numpy_reference import Params, adam, backward, descend, forward
from grenade_py.optimizers import SGD, Adam, AdamW, Optimizer

RECURRENT = ("LSTM", "BasicRecurrent")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def lstm_forward(p: Params, cell: np.ndarray, x: np.ndarray
                 ) -> tuple[Any, np.ndarray, np.ndarray]:
    """runRecurrentForwards: (tape, next cell, output)."""
    o = len(cell)
    w, u, b = p["w"].T, p["u"].T, p["b"]  # stored transposed: (i, 4 o), (o, 3 o)
    f_s = b[:o] + w[:o] @ x + u[:o] @ cell
    i_s = b[o:2 * o] + w[o:2 * o] @ x + u[o:2 * o] @ cell
    o_s = b[2 * o:3 * o] + w[2 * o:3 * o] @ x + u[2 * o:] @ cell
    c_s = b[3 * o:] + w[3 * o:] @ x
    f_t, i_t, o_t, c_x = _sigmoid(f_s), _sigmoid(i_s), _sigmoid(o_s), np.tanh(c_s)
    c_t = f_t * cell + i_t * c_x
    return (cell, x, f_t, i_t, o_t, c_x, c_t), c_t, o_t * c_t


def lstm_backward(p: Params, tape: Any, cell_grad: np.ndarray, dh: np.ndarray
                  ) -> tuple[Params, np.ndarray, np.ndarray]:
    """runRecurrentBackwards: (gradients, delta of the previous cell, delta of the input)."""
    cell, x, f_t, i_t, o_t, c_x, c_t = tape
    o = len(cell)
    w, u = p["w"].T, p["u"].T
    dc = dh * o_t + cell_grad
    f_s = f_t * (1 - f_t) * (dc * cell)
    o_s = o_t * (1 - o_t) * (dh * c_t)
    i_s = i_t * (1 - i_t) * (dc * c_x)
    c_s = (1 - c_x * c_x) * (dc * i_t)
    gates = np.concatenate([f_s, i_s, o_s])
    cell_delta = u[:o].T @ f_s + u[2 * o:].T @ o_s + u[o:2 * o].T @ i_s + dc * f_t
    d = np.concatenate([gates, c_s])
    return ({"w": np.outer(x, d), "u": np.outer(cell, gates), "b": d, "state": np.zeros(o)},
            cell_delta, w.T @ d)


def basic_forward(p: Params, last: np.ndarray, x: np.ndarray
                  ) -> tuple[Any, np.ndarray, np.ndarray]:
    y = p["b"] + p["w"] @ np.concatenate([x, last])
    return (last, x), y, y


def basic_backward(p: Params, tape: Any, d_rec: np.ndarray, dy: np.ndarray
                   ) -> tuple[Params, np.ndarray, np.ndarray]:
    last, x = tape
    total = d_rec + dy
    back = p["w"].T @ total
    return ({"w": np.outer(total, np.concatenate([x, last])), "b": total,
             "state": np.zeros(len(last))}, back[len(x):], back[:len(x)])


class NumpyRecurrent:
    """A recurrent network of layer specs with parameters from RecurrentNetwork.get_parameters()
    (the recurrent layers' "state" is Grenade's RecurrentInputs)."""

    def __init__(self, specs: Sequence[dict[str, Any]], parameters: Sequence[Params]) -> None:
        self.specs = list(specs)
        self.parameters = [{k: np.array(v, np.float64) for k, v in p.items()}
                           for p in parameters]
        self.second = [{k: np.zeros_like(v) for k, v in p.items()} for p in self.parameters]
        self.t = self.state_t = 0
        #: Steps whose gradient clip_norm scaled down.
        self.clipped = 0
        self.momentum = [{k: np.zeros_like(v) for k, v in p.items()} for p in self.parameters]

    def _step_forward(self, states: list[Any], x: np.ndarray
                      ) -> tuple[list[Any], list[Any], np.ndarray]:
        """runRecurrent for one step: (tapes, next states, output)."""
        tapes, nexts = [], []
        for spec, p, state in zip(self.specs, self.parameters, states, strict=True):
            if spec["type"] == "LSTM":
                tape, state, x = lstm_forward(p, state, x)
            elif spec["type"] == "BasicRecurrent":
                tape, state, x = basic_forward(p, state, x)
            else:
                y, tape = forward(spec, p, x[None])
                x = y[0]
            tapes.append(tape)
            nexts.append(state)
        return tapes, nexts, x

    def _step_backward(self, tapes: list[Any], side: list[Any], dy: np.ndarray
                       ) -> tuple[list[Params], list[Any], np.ndarray]:
        """runRecurrent' for one step: (gradients, side deltas, input delta)."""
        grads: list[Params] = [{} for _ in self.specs]
        sides: list[Any] = [None for _ in self.specs]
        for k in reversed(range(len(self.specs))):
            spec, p = self.specs[k], self.parameters[k]
            if spec["type"] == "LSTM":
                grads[k], sides[k], dy = lstm_backward(p, tapes[k], side[k], dy)
            elif spec["type"] == "BasicRecurrent":
                grads[k], sides[k], dy = basic_backward(p, tapes[k], side[k], dy)
            else:
                g, dx = backward(spec, p, tapes[k], dy[None])
                grads[k], dy = g, dx[0]
        return grads, sides, dy

    def states(self) -> list[Any]:
        return [p["state"] if s["type"] in RECURRENT else None
                for s, p in zip(self.specs, self.parameters, strict=True)]

    def run(self, xs: np.ndarray) -> np.ndarray:
        """runRecurrent over a sequence from the starting states: the outputs (T, out)."""
        states, ys = self.states(), []
        for x in xs:
            _, states, y = self._step_forward(states, x)
            ys.append(y)
        return np.array(ys)

    def gradients(self, xs: np.ndarray, targets: Sequence[np.ndarray | None]
                  ) -> tuple[list[list[Params]], list[Any]]:
        """backPropagateRecurrent: the per-step gradients in time order and the starting
        states' deltas."""
        states, forwards = self.states(), []
        for x in xs:
            tapes, states, y = self._step_forward(states, x)
            forwards.append((tapes, y))
        side = [np.zeros_like(p["state"]) if s["type"] in RECURRENT else None
                for s, p in zip(self.specs, self.parameters, strict=True)]
        per_step: list[list[Params]] = [[] for _ in xs]
        for t in reversed(range(len(xs))):
            tapes, y = forwards[t]
            target = targets[t]
            error = np.zeros_like(y) if target is None else y - target
            per_step[t], side, _ = self._step_backward(tapes, side, error)
        return per_step, side

    def train(self, xs: np.ndarray, targets: Sequence[np.ndarray | None],
              lp: Optimizer, summed: bool = False) -> None:
        """trainRecurrent: the per-step gradients applied in time order, one full step each
        (`summed`: one step from their sum), then updateRecInputs on the starting states.
        Under Adam/AdamW (`lp`) each of those steps is torch's step t (t counting every step
        taken), and the starting states take one Adam step of their own per sequence. With
        `lp.clip_norm`, each step's gradient (all but the starting states') is clipped first."""
        per_step, side = self.gradients(xs, targets)
        if summed:
            per_step = [[{k: np.sum([g[i][k] for g in per_step], axis=0) for k in per_step[0][i]}
                         for i in range(len(self.specs))]]
        for grads in per_step:
            if lp.clip_norm is not None:  # clip_grad_norm_ over all but the starting states
                norm = np.sqrt(sum(np.sum(v ** 2) for g in grads for k, v in g.items()
                                   if k != "state"))
                factor = min(1.0, lp.clip_norm / (norm + 1e-6))
                self.clipped += factor < 1
                grads = [{k: v * factor for k, v in g.items()} for g in grads]
            self.t += 1
            for spec, p, m, v, g in zip(self.specs, self.parameters, self.momentum, self.second,
                                        grads, strict=True):
                for name in g:
                    if name == "state":
                        continue
                    decays = not (spec["type"] == "BasicRecurrent" and name == "b")
                    p[name], m[name], v[name] = self._step(lp, p[name], m[name], v[name],
                                                           g[name], self.t, decays)
        self.state_t += 1
        for spec, p, m, v, delta in zip(self.specs, self.parameters, self.momentum,
                                        self.second, side, strict=True):
            if spec["type"] not in RECURRENT:
                continue
            if isinstance(lp, Adam):
                p["state"], m["state"], v["state"] = self._step(
                    lp, p["state"], m["state"], v["state"], delta, self.state_t, True)
            else:
                assert isinstance(lp, SGD)
                p["state"] = (1 - lp.rate * lp.l2) * p["state"] - lp.rate * delta

    @staticmethod
    def _step(lp: Optimizer, w: np.ndarray, m: np.ndarray, v: np.ndarray, g: np.ndarray,
              t: int, decays: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if isinstance(lp, Adam):
            return adam(w, m, v, g, t, lp.rate, lp.beta1, lp.beta2, lp.eps,
                        lp.weight_decay if decays else 0.0, isinstance(lp, AdamW))
        assert isinstance(lp, SGD)
        step = lp if decays else SGD(lp.rate, lp.momentum, 0.0)
        w, m = descend(w, m, g, step)
        return w, m, v
