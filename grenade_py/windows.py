"""Grenade's trainRecurrent as one kernel: the device loops over the windows.

For each window (one sequence) in order, the loop does what a sequence Step does in Grenade's
order (`Step.train(..., ordered=True)`): forward over the window's steps from the learned
starting states, the error y - target at the steps with a target, back through time with every
per-step gradient taken from the weights before the window; then every parameter takes the
window's per-step gradients one at a time in time order, and the starting states descend
(Grenade's updateRecInputs under SGD). One launch trains many windows, each of its own length,
so a small network pays no launch per layer per window.

The loop is assembled from each layer's `window_form`, which calls the OpenCL functions of the
layer's own kernels (lstm_unit_forward, fc_forward_at, recurrent_ordered_at, ...), so the maths
exists once; its dot products add in another order than the GEMMs', so results equal the
layer-by-layer ones to rounding. It runs as one work-group (one lane on a CPU), so it pays where
a network is small enough that its launches, not its arithmetic, cost the time: `window_trainer`
chooses it up to WINDOW_PARAMETERS parameters and logs the choice at debug level.
"""
from __future__ import annotations

import logging

import numpy as np
import pyopencl as cl
import pyopencl.array as cl_array

from grenade_py.device import Launch, buffer
from grenade_py.fused import BARRIER, build_loop, chain
from grenade_py.layers import Layer
from grenade_py.layers.base import WindowForm
from grenade_py.losses import Loss
from grenade_py.optimizers import Optimizer
from grenade_py.recurrent_network import RecurrentNetwork
from grenade_py.shapes import size

log = logging.getLogger("grenade_py")

#: The largest network (in parameters, starting states included) trained by the fused window
#: loop; larger ones train layer by layer, where each layer's launches use every compute unit.
WINDOW_PARAMETERS = 1024

#: The arguments before the widths: the windows and the two optimisers' values.
FIXED = ["int count", "int rows", "global const REAL *io", "REAL rate", "REAL beta1",
         "REAL beta2", "REAL eps", "REAL decay", "REAL p1", "REAL p2", "REAL q1", "REAL q2",
         "global const REAL *one"]


def window_source(forms: list[WindowForm], top: int, kind: int) -> str:
    """The window loop's OpenCL source (kernel `windows_train`) for layers of these forms,
    whose loss writes the delta at boundary `top`, under optimiser `kind`.

    `io` holds `count` windows (`pack`): their inputs (rows = T x count of n0 values), targets
    (rows of n{last}), mask (rows) and lengths (count), time-major as a sequence Step's
    buffers: window s's step t is row t * count + s. `p1, p2` are Adam's powers at the
    parameters' next step, `q1, q2` at the starting states'."""
    count = len(forms)
    scratch = [f"a{k}" for k in range(count + 1)] + [f"d{k}" for k in range(1, count + 1)]
    scratch += ["tg", "mk"] + [name for form in forms for name in form.scratch]
    params = FIXED + [f"int n{k}" for k in range(count + 1)]
    params += [decl for form in forms for decl, _ in form.args]
    params += [f"global REAL *{name}" for name in scratch]
    forward = [form.forward for form in forms]
    backward = [forms[i].backward for i in reversed(range(top)) if forms[i].backward]
    update = [forms[i].update for i in range(top) if forms[i].update]
    body = f"\n{BARRIER}\n".join(forward + [
        f"for (int q = lid; q < T * n{count}; q += nl) d{top}[q] = mk[q / n{count}] == 0 ? "
        f"(REAL)0 : loss_gradient_at(a{count}[q], tg[q], 1);"] + backward + update)
    return f"""
kernel void windows_train({", ".join(p.replace(" *", " *restrict ") for p in params)}) {{
    const int lid = get_local_id(0), nl = get_local_size(0);
    global const REAL *xs = io, *ts = xs + (size_t)rows * n0, *ms = ts + (size_t)rows * n{count},
                      *lengths = ms + rows;
    optimizer opt = optimizer_make({kind}, rate, beta1, beta2, eps, p1, p2),
              sopt = optimizer_make({kind}, rate, beta1, beta2, eps, q1, q2);
    for (int s = 0; s < count; ++s) {{
        const int T = (int)lengths[s];
        for (int q = lid; q < T * n0; q += nl)
            a0[q] = xs[((size_t)(q / n0) * count + s) * n0 + q % n0];
        for (int q = lid; q < T * n{count}; q += nl)
            tg[q] = ts[((size_t)(q / n{count}) * count + s) * n{count} + q % n{count}];
        for (int t = lid; t < T; t += nl) mk[t] = ms[(size_t)t * count + s];
{BARRIER}
{body}
{BARRIER}
        for (int t = 0; t < T; ++t) opt = optimizer_next(opt);
        sopt = optimizer_next(sopt);
    }}
}}
"""


def pack(xs: np.ndarray, ts: np.ndarray, ms: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Windows as the loop's `io` takes them, in xs' precision: xs (T, B, ...), ts (T, B, ...)
    and ms (T, B) time-major, then the lengths (B,)."""
    return np.concatenate([xs.ravel(), ts.ravel(), ms.ravel(), lengths.astype(xs.dtype)])


class WindowTrainer:
    """The fused window loop of one RecurrentNetwork under one optimiser kind and loss, its
    arguments set once (a call sets those that changed: ~2 us each on PoCL, where setting all
    of them took ~120 us); its buffers grow to the largest call it has seen."""

    def __init__(self, net: RecurrentNetwork, layers: list[Layer], forms: list[WindowForm],
                 top: int, kind: int) -> None:
        self.net, self.device, self.forms = net, net.device, forms
        built = build_loop(self.device, "windows_train",
                           lambda _: window_source(forms, top, kind))
        assert built is not None
        kernel, lanes = built
        shapes = [layer.in_shape for layer in layers] + [net.output_shape]
        self.widths = [size(shape) for shape in shapes]
        real = self.device.dtype
        self.io = self.device.zeros((1,))
        self.launch = Launch(self.device, kernel, (lanes,), (
            0, 0, self.io, *(real(0) for _ in range(9)), self.device.to_device(np.ones(1)),
            *(np.int32(w) for w in self.widths), *(v for form in forms for _, v in form.args),
            *self._scratch(1)), local=(lanes,))
        self.capacity = 1

    def _scratch(self, steps: int) -> list[cl_array.Array]:
        """The loop's own buffers for windows of up to `steps` steps, in its arguments' order."""
        widths = self.widths
        sizes = [steps * w for w in widths] + [steps * w for w in widths[1:]]
        sizes += [steps * widths[-1], steps]
        sizes += [steps * per_step + extra for form in self.forms
                  for per_step, extra in form.scratch.values()]
        return [self.device.zeros((max(1, n),)) for n in sizes]

    def __call__(self, io: np.ndarray, rows: int, lengths: np.ndarray, optimizer: Optimizer
                 ) -> cl.Event:
        """Enqueue Grenade's training on the windows `io` packs (`pack`: rows = T x their
        count; lengths: theirs) in order, and return the event of io's copy (io must live
        until it is done); the network's step counts advance as the layer-by-layer updates
        would advance them."""
        count = lengths.size
        net, launch, real = self.net, self.launch, self.device.dtype
        longest = int(lengths.max())
        if longest > self.capacity:
            scratch = self._scratch(longest)
            for index, array in enumerate(scratch, start=len(launch.args) - len(scratch)):
                launch.set_arg(index, array)
            self.capacity = longest
        if io.size > self.io.size:
            self.io = self.device.zeros((io.size,))
            launch.set_arg(2, self.io)
        copied = cl.enqueue_copy(self.device.queue, buffer(self.io), io, is_blocking=False)
        launch.set_arg(0, np.int32(count))
        launch.set_arg(1, np.int32(rows))
        values = (*optimizer.kernel_values(), *optimizer.powers(net.steps + 1),
                  *optimizer.powers(net.state_steps + 1))
        for index, value in enumerate(values, start=3):
            launch.set_arg(index, real(value))
        launch()
        net.steps += int(lengths.sum())
        net.state_steps += count
        return copied


def window_trainer(net: RecurrentNetwork, optimizer: Optimizer, loss: Loss
                   ) -> WindowTrainer | None:
    """The fused window loop for `net` under `optimizer` and `loss` (kept in `net.held`), or
    None where the network trains layer by layer: a layer without a window form, a network
    over WINDOW_PARAMETERS, or an optimiser that clips (clipping needs each step's whole
    gradient before any update)."""
    key = ("windows", optimizer.kind, loss.name)
    if key in net.held:
        trainer: WindowTrainer | None = net.held[key]
        return trainer if optimizer.clip_norm is None else None
    links = chain(net, net.input_shape)
    layers = [layer for layer, _ in links]
    forms = [layer.window_form(i, i > 0) for i, layer in enumerate(layers)]
    parameters = int(net.flat["parameters"].size)
    reason = ("a layer has no window form" if None in forms else
              f"{parameters} parameters, over WINDOW_PARAMETERS" if parameters > WINDOW_PARAMETERS
              else None)
    top = loss.top(net) - (len(net.layers) - len(layers))
    if reason is None:
        net.held[key] = WindowTrainer(net, layers, forms, top, optimizer.kind)  # type: ignore[arg-type]
        log.debug("%r trains windows in the fused window loop", net)
    else:
        net.held[key] = None
        log.debug("%r trains windows layer by layer (%s)", net, reason)
    return window_trainer(net, optimizer, loss)
