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

from grenade_py.device import buffer, named_errors
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
FIXED = ["int first", "int count", "int B", "global const REAL *xs", "global const REAL *ts",
         "global const REAL *ms", "global const int *lengths", "REAL rate", "REAL beta1",
         "REAL beta2", "REAL eps", "REAL decay", "REAL p1", "REAL p2", "REAL q1", "REAL q2",
         "global const REAL *one"]


def window_source(forms: list[WindowForm], top: int, kind: int) -> str:
    """The window loop's OpenCL source (kernel `windows_train`) for layers of these forms,
    whose loss writes the delta at boundary `top`, under optimiser `kind`.

    Windows first .. first + count - 1 of B: window s's step t is row t * B + s of xs, ts and
    ms (time-major, as a sequence Step's buffers), lengths[s] steps long. `p1, p2` are Adam's
    powers at the parameters' next step, `q1, q2` at the starting states'."""
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
    optimizer opt = optimizer_make({kind}, rate, beta1, beta2, eps, p1, p2),
              sopt = optimizer_make({kind}, rate, beta1, beta2, eps, q1, q2);
    for (int s = first; s < first + count; ++s) {{
        const int T = lengths[s];
        for (int q = lid; q < T * n0; q += nl)
            a0[q] = xs[((size_t)(q / n0) * B + s) * n0 + q % n0];
        for (int q = lid; q < T * n{count}; q += nl)
            tg[q] = ts[((size_t)(q / n{count}) * B + s) * n{count} + q % n{count}];
        for (int t = lid; t < T; t += nl) mk[t] = ms[(size_t)t * B + s];
{BARRIER}
{body}
{BARRIER}
        for (int t = 0; t < T; ++t) opt = optimizer_next(opt);
        sopt = optimizer_next(sopt);
    }}
}}
"""


class WindowTrainer:
    """The fused window loop of one RecurrentNetwork under one optimiser kind and loss, its
    fixed arguments set once; its scratch grows to the longest window it has seen."""

    def __init__(self, net: RecurrentNetwork, layers: list[Layer], forms: list[WindowForm],
                 top: int, kind: int) -> None:
        self.net, self.device, self.forms = net, net.device, forms
        built = build_loop(self.device, "windows_train",
                           lambda _: window_source(forms, top, kind))
        assert built is not None
        self.kernel, self.lanes = built
        shapes = [layer.in_shape for layer in layers] + [net.output_shape]
        self.widths = [size(shape) for shape in shapes]
        self.held = [value for form in forms for _, value in form.args]
        self.one = self.device.to_device(np.ones(1))
        fixed = [buffer(self.one)] + [np.int32(w) for w in self.widths] + [
            buffer(v) if isinstance(v, cl_array.Array) else v for v in self.held]
        for index, value in enumerate(fixed, start=len(FIXED) - 1):
            self.kernel.set_arg(index, value)
        self.scratch_at = len(FIXED) + len(self.widths) + len(self.held)
        self.capacity = 0
        self.scratch: list[cl_array.Array] = []

    def _grow(self, steps: int) -> None:
        """Scratch for windows of up to `steps` steps."""
        widths = self.widths
        sizes = [steps * w for w in widths] + [steps * w for w in widths[1:]]
        sizes += [steps * widths[-1], steps]
        sizes += [steps * per_step + extra for form in self.forms
                  for per_step, extra in form.scratch.values()]
        self.scratch = [self.device.zeros((max(1, n),)) for n in sizes]
        for index, array in enumerate(self.scratch, start=self.scratch_at):
            self.kernel.set_arg(index, buffer(array))
        self.capacity = steps

    def __call__(self, xs: cl_array.Array, ts: cl_array.Array, ms: cl_array.Array,
                 lengths: cl_array.Array, host_lengths: np.ndarray, batch: int,
                 optimizer: Optimizer) -> None:
        """Enqueue Grenade's training on the `batch` windows of xs ((T * batch, *in)
        time-major), ts, ms and lengths (host_lengths: their host copy), in order; the
        network's step counts advance as the layer-by-layer updates would advance them."""
        net, k, real = self.net, self.kernel, np.dtype(self.device.dtype).type
        longest = int(host_lengths.max())
        if longest > self.capacity:
            self._grow(longest)
        for index, value in enumerate((0, batch, batch), start=0):
            k.set_arg(index, np.int32(value))
        for index, array in enumerate((xs, ts, ms, lengths), start=3):
            k.set_arg(index, buffer(array))
        values = (*optimizer.kernel_values(), *optimizer.powers(net.steps + 1),
                  *optimizer.powers(net.state_steps + 1))
        for index, real_value in enumerate(values, start=7):
            k.set_arg(index, real(real_value))
        with named_errors(f"run the fused window loop on {self.device.name}"):
            cl.enqueue_nd_range_kernel(self.device.queue, k, (self.lanes,), (self.lanes,))
        net.steps += int(host_lengths.sum())
        net.state_steps += batch


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
