"""A plain numpy transcription of Grenade's recurrent half, step by step as Grenade runs it
(Grenade.Recurrent.Core.Runner and .Network, Layers.LSTM, Layers.BasicRecurrent): the oracle for
the device's layer-by-layer runner. Parameters are named as RecurrentNetwork.get_parameters()
gives them; vectors are 1-D, one step at a time."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from grenade_py.numpy_reference import Params, adam, backward, descend, forward, part
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


def unit_forward(spec: dict[str, Any], p: Params, state: Any, x: np.ndarray
                 ) -> tuple[Any, Any, np.ndarray]:
    """One layer of the list for one step (runRecurrentForwards, or runForwards for a
    feed-forward layer): (tape, next state, output). A ConcatRecurrent's state is its
    branches' pair (ConcatRecBoth's RecurrentInputs; None for a feed-forward branch)."""
    kind = spec["type"]
    if kind == "LSTM":
        return lstm_forward(p, state, x)
    if kind == "BasicRecurrent":
        return basic_forward(p, state, x)
    if kind == "ConcatRecurrent":
        ta, sa, ya = unit_forward(spec["a"], part(p, "a"), state[0], x)
        tb, sb, yb = unit_forward(spec["b"], part(p, "b"), state[1], x)
        return (ta, tb, len(ya)), (sa, sb), np.concatenate([ya, yb])
    y, tape = forward(spec, p, x[None])
    return tape, None, y[0]


def unit_backward(spec: dict[str, Any], p: Params, tape: Any, side: Any, dy: np.ndarray
                  ) -> tuple[Params, Any, np.ndarray]:
    """The step's backward pass of one layer (runRecurrentBackwards): (gradients keyed by
    path, the delta of the state it started from, the input's delta)."""
    kind = spec["type"]
    if kind == "LSTM":
        return lstm_backward(p, tape, side, dy)
    if kind == "BasicRecurrent":
        return basic_backward(p, tape, side, dy)
    if kind == "ConcatRecurrent":
        ta, tb, m = tape
        ga, sa, dxa = unit_backward(spec["a"], part(p, "a"), ta, side[0], dy[:m])
        gb, sb, dxb = unit_backward(spec["b"], part(p, "b"), tb, side[1], dy[m:])
        grads = {f"a.{k}": v for k, v in ga.items()} | {f"b.{k}": v for k, v in gb.items()}
        return grads, (sa, sb), dxa + dxb
    g, dx = backward(spec, p, tape, dy[None])
    return g, None, dx[0]


def starting_states(spec: dict[str, Any], p: Params, zero: bool = False) -> Any:
    """A layer's learned starting state (a cell's "state"; a ConcatRecurrent's pair), or its
    zeros."""
    if spec["type"] in RECURRENT:
        return np.zeros_like(p["state"]) if zero else p["state"]
    if spec["type"] == "ConcatRecurrent":
        return tuple(starting_states(spec[k], part(p, k), zero) for k in ("a", "b"))
    return None


def state_deltas(spec: dict[str, Any], side: Any, prefix: str = ""
                 ) -> list[tuple[str, np.ndarray]]:
    """(parameter name, delta) of each cell's starting state in a layer."""
    if spec["type"] in RECURRENT:
        return [(prefix + "state", side)]
    if spec["type"] == "ConcatRecurrent":
        return [found for k, s in zip("ab", side, strict=True)
                for found in state_deltas(spec[k], s, f"{prefix}{k}.")]
    return []


def decays(spec: dict[str, Any], name: str) -> bool:
    """Whether parameter `name` (a path) takes the L2 term: all but BasicRecurrent's bias."""
    *path, leaf = name.split(".")
    for key in path:
        spec = spec[key] if key in ("a", "b") else spec["layers"][int(key)]
    return not (spec["type"] == "BasicRecurrent" and leaf == "b")


def is_state(name: str) -> bool:
    return name.rpartition(".")[2] == "state"


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
            tape, state, x = unit_forward(spec, p, state, x)
            tapes.append(tape)
            nexts.append(state)
        return tapes, nexts, x

    def _step_backward(self, tapes: list[Any], side: list[Any], dy: np.ndarray
                       ) -> tuple[list[Params], list[Any], np.ndarray]:
        """runRecurrent' for one step: (gradients, side deltas, input delta)."""
        grads: list[Params] = [{} for _ in self.specs]
        sides: list[Any] = [None for _ in self.specs]
        for k in reversed(range(len(self.specs))):
            grads[k], sides[k], dy = unit_backward(self.specs[k], self.parameters[k], tapes[k],
                                                   side[k], dy)
        return grads, sides, dy

    def states(self) -> list[Any]:
        return [starting_states(s, p) for s, p in zip(self.specs, self.parameters, strict=True)]

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
        side = [starting_states(s, p, zero=True)
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
                                   if not is_state(k)))
                factor = min(1.0, lp.clip_norm / (norm + 1e-6))
                self.clipped += factor < 1
                grads = [{k: v * factor for k, v in g.items()} for g in grads]
            self.t += 1
            for spec, p, m, v, g in zip(self.specs, self.parameters, self.momentum, self.second,
                                        grads, strict=True):
                for name in g:
                    if not is_state(name):
                        p[name], m[name], v[name] = self._step(
                            lp, p[name], m[name], v[name], g[name], self.t, decays(spec, name))
        self.state_t += 1
        for spec, p, m, v, layer_side in zip(self.specs, self.parameters, self.momentum,
                                             self.second, side, strict=True):
            for name, delta in state_deltas(spec, layer_side):
                if isinstance(lp, Adam):
                    p[name], m[name], v[name] = self._step(
                        lp, p[name], m[name], v[name], delta, self.state_t, True)
                else:
                    assert isinstance(lp, SGD)
                    p[name] = (1 - lp.rate * lp.l2) * p[name] - lp.rate * delta

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
