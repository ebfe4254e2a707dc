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

import functools
import logging

import numpy as np
import pyopencl as cl
import pyopencl.array as cl_array

from grenade_py.device import Launch, buffer, recent
from grenade_py.fused import BARRIER, build_loop, unrolled
from grenade_py.layers import Layer
from grenade_py.layers.base import WindowForm
from grenade_py.losses import Loss
from grenade_py.network import aligned_offsets, flat_view, pack
from grenade_py.optimizers import VALUES, Optimizer, take_state
from grenade_py.recurrent_network import RecurrentNetwork
from grenade_py.shapes import size

log = logging.getLogger("grenade_py")

#: The largest network (in parameters, starting states included) trained by the fused window
#: loop; larger ones train layer by layer, where each layer's launches use every compute unit.
WINDOW_PARAMETERS = 1024

#: The arguments before the widths: the windows, the two optimisers' values, `one` and the
#: metrics' sums.
FIXED = ["int count", "global const REAL *io", "int xs_at", "int ts_at", "int ms_at",
         "int lengths_at", *(f"REAL {name}" for name in VALUES), "REAL q1", "REAL q2",
         "global const REAL *one", "global REAL *acc"]


def window_source(forms: list[WindowForm], top: int, kind: int, from_logits: bool) -> str:
    """The window loop's OpenCL source (kernel `windows_train`) for layers of these forms,
    whose loss writes the delta at boundary `top` (and measures from the logits there, for
    cross entropy), under optimiser `kind`.

    `io` holds `count` windows (`Layout`) time-major, as a sequence Step's buffers: window s's
    step t is row t * count + s of the inputs at xs_at (n0 values a row), the targets at ts_at
    and the mask at ms_at; its length is at lengths_at + s. `p1, p2` are Adam's powers at the
    parameters' next step, `q1, q2` at the starting states'. Each window adds its summed loss,
    correct steps and steps with a target to acc[0..2], as Step.metrics does."""
    count = len(forms)
    scratch = [f"a{k}" for k in range(count + 1)] + [f"d{k}" for k in range(1, count + 1)]
    scratch += ["tg", "mk"] + [name for form in forms for name in form.scratch]
    params = FIXED + [f"int n{k}" for k in range(count + 1)]
    params += [decl for form in forms for decl, _ in form.args]
    params += [f"global REAL *{name}" for name in scratch]
    forward = [form.forward for form in forms]
    backward = [forms[i].backward for i in reversed(range(top)) if forms[i].backward]
    update = [forms[i].update for i in range(top) if forms[i].update]
    y, n = f"a{count} + (size_t)t * n{count}", f"n{count}"
    metrics = f"""if (lid == 0) {{
    REAL sums[3] = {{0, 0, 0}};
    for (int t = 0; t < T; ++t) {{
        if (mk[t] == 0) continue;
        sums[0] += loss_row_at({n}, {int(from_logits)}, {y}, a{top} + (size_t)t * n{top},
                               tg + (size_t)t * {n});
        sums[1] += correct_row_at({n}, {y}, tg + (size_t)t * {n});
        sums[2] += 1;
    }}
    for (int k = 0; k < 3; ++k) acc[k] += sums[k];
}}"""
    body = f"\n{BARRIER}\n".join(forward + [metrics + "\n" +
        f"for (int q = lid; q < T * {n}; q += nl) d{top}[q] = mk[q / {n}] == 0 ? "
        f"(REAL)0 : loss_gradient_at(a{count}[q], tg[q], 1);"] + backward + update)
    return f"""
kernel void windows_train({", ".join(p.replace(" *", " *restrict ") for p in params)}) {{
    const int lid = get_local_id(0), nl = get_local_size(0);
    global const REAL *xs = io + xs_at, *ts = io + ts_at, *ms = io + ms_at,
                      *lengths = io + lengths_at;
    optimizer opt = optimizer_make({kind}, rate, beta1, beta2, eps, p1, p2),
              sopt = optimizer_make({kind}, rate, beta1, beta2, eps, q1, q2);
    for (int s = 0; s < count; ++s) {{
        const int T = (int)lengths[s];
        for (int q = lid; q < T * n0; q += nl)
            a0[q] = xs[((size_t)(q / n0) * count + s) * n0 + q % n0];
        for (int q = lid; q < T * {n}; q += nl)
            tg[q] = ts[((size_t)(q / {n}) * count + s) * {n} + q % {n}];
        for (int t = lid; t < T; t += nl) mk[t] = ms[(size_t)t * count + s];
{BARRIER}
{body}
{BARRIER}
        for (int t = 0; t < T; ++t) opt = optimizer_next(opt);
        sopt = optimizer_next(sopt);
    }}
}}
"""


class Layout:
    """Where `count` windows of up to `steps` steps lie in the loop's `io` buffer: the inputs
    (steps x count rows of n0), targets (rows of n{last}), mask (rows) and lengths (count),
    each from an offset aligned for a sub-buffer (so that kernels may fill them as buffers of
    their own)."""

    def __init__(self, steps: int, count: int, widths: tuple[int, int], align: int) -> None:
        rows = steps * count
        self.steps, self.count = steps, count
        self.offsets, self.size = aligned_offsets(
            align, [rows * widths[0], rows * widths[1], rows, count])

    def pack(self, xs: np.ndarray, ts: np.ndarray, ms: np.ndarray, lengths: np.ndarray
             ) -> np.ndarray:
        """xs (T, B, ...), ts (T, B, ...) and ms (T, B) time-major and the lengths (B,), laid
        out as `io` holds them, in xs' precision."""
        return pack(self.size, self.offsets, (xs, ts, ms, lengths), xs.dtype)


class WindowTrainer:
    """The fused window loop of one RecurrentNetwork under one optimiser kind and loss, its
    arguments set once (a call sets those that changed: ~2 us each on PoCL, where setting all
    of them took ~120 us); its scratch grows to the longest window it has seen."""

    def __init__(self, net: RecurrentNetwork, layers: list[Layer], forms: list[WindowForm],
                 built: tuple[cl.Kernel, int]) -> None:
        self.net, self.device, self.forms = net, net.device, forms
        kernel, lanes = built
        shapes = [layer.in_shape for layer in layers] + [net.output_shape]
        self.widths = [size(shape) for shape in shapes]
        real = self.device.dtype
        self.io = self.device.zeros((1,))
        #: What the loop measures when the caller does not ask (`acc`).
        self.sums = self.device.zeros((3,))
        self.launch = Launch(self.device, kernel, (lanes,), (
            0, self.io, 0, 0, 0, 0, *(real(0) for _ in range(9)),
            self.device.to_device(np.ones(1)), self.sums,
            *(np.int32(w) for w in self.widths), *(v for form in forms for _, v in form.args),
            *self._scratch(1)), local=(lanes,))
        self.capacity = 1

    def layout(self, steps: int, count: int) -> Layout:
        """Where `count` windows of up to `steps` steps lie in an io buffer."""
        return Layout(steps, count, (self.widths[0], self.widths[-1]), self.device.alignment)

    def upload(self, host: np.ndarray) -> tuple[cl_array.Array, cl.Event]:
        """The loop's own io buffer (grown if need be) and the event of copying `host` (a
        Layout's pack) into it; host must live until the copy is done."""
        if host.size > self.io.size:
            self.io = self.device.zeros((host.size,))
        return self.io, cl.enqueue_copy(self.device.queue, buffer(self.io), host,
                                         is_blocking=False)

    def _scratch(self, steps: int) -> list[cl_array.Array]:
        """The loop's own buffers for windows of up to `steps` steps, in its arguments' order."""
        widths = self.widths
        sizes = [steps * w for w in widths] + [steps * w for w in widths[1:]]
        sizes += [steps * widths[-1], steps]
        sizes += [steps * per_step + extra for form in self.forms
                  for per_step, extra in form.scratch.values()]
        return [self.device.zeros((max(1, n),)) for n in sizes]

    def __call__(self, io: cl_array.Array, layout: Layout, lengths: np.ndarray,
                 optimizer: Optimizer, acc: cl_array.Array | None = None) -> None:
        """Enqueue Grenade's training on the windows in `io` (as `layout` lays them out; their
        `lengths`), in order, adding what they measure to `acc` (3 values) if given; the
        network's step counts advance as the layer-by-layer updates would advance them."""
        net, launch, real = self.net, self.launch, self.device.dtype
        take_state(net, optimizer)
        if layout.steps > self.capacity:
            scratch = self._scratch(layout.steps)
            for index, array in enumerate(scratch, start=len(launch.args) - len(scratch)):
                launch.set_arg(index, array)
            self.capacity = layout.steps
        launch.set_arg(0, np.int32(layout.count))
        launch.set_arg(1, io)
        for index, at in enumerate(layout.offsets, start=2):
            launch.set_arg(index, np.int32(at))
        values = (*optimizer.arguments(net.steps + 1, real).values(),
                  *optimizer.powers(net.state_steps + 1, real))
        for index, value in enumerate(values, start=6):
            launch.set_arg(index, real(value))
        launch.set_arg(16, self.sums if acc is None else acc)
        launch()
        net.steps += int(lengths.sum())
        net.state_steps += layout.count

    def release(self) -> None:
        """Let go of a caller's io buffer and sums (a SymbolCorpus's), once the work is done:
        the loop is held on the network, and would otherwise keep them until its next call."""
        self.launch.set_arg(1, self.io)
        self.launch.set_arg(16, self.sums)


def window_trainer(net: RecurrentNetwork, optimizer: Optimizer, loss: Loss
                   ) -> WindowTrainer | None:
    """The fused window loop for `net` under `optimizer` and `loss` (kept in `net.held`), or
    None where the network trains layer by layer: a layer without a window form, a network
    over WINDOW_PARAMETERS, an optimiser that clips (clipping needs each step's whole gradient
    before any update), or a loop whose arguments the device does not take."""
    if optimizer.clip_norm is not None:
        return None
    key = ("windows", optimizer.kind, loss.name)
    if key in net.held:
        trainer: WindowTrainer | None = net.held[key]
        return trainer
    layers, _, top = unrolled(net, loss)
    forms = [layer.window_form(i, i > 0) for i, layer in enumerate(layers)]
    parameters = int(net.flat["parameters"].size)
    reason = ("a layer has no window form" if None in forms else
              f"{parameters} parameters, over WINDOW_PARAMETERS" if parameters > WINDOW_PARAMETERS
              else None)
    built = None
    if reason is None:
        built = build_loop(net.device, "windows_train", lambda _: window_source(
            forms, top, optimizer.kind, loss.from_logits))  # type: ignore[arg-type]
        reason = None if built else "its arguments are more than the device takes"
    if built is not None:
        net.held[key] = WindowTrainer(net, layers, forms, built)  # type: ignore[arg-type]
        log.debug("%r trains windows in the fused window loop", net)
    else:
        net.held[key] = None
        log.debug("%r trains windows layer by layer (%s)", net, reason)
    return window_trainer(net, optimizer, loss)


#: Windows per launch of the fused window loop in SymbolCorpus.train.
WINDOW_CHUNK = 256
#: The chunk shapes (steps, windows) whose buffers and one-hot launch a corpus keeps, the most
#: recently used (as `execution.steps` keeps a RecurrentNetwork's Steps).
WINDOW_FILLS_KEPT = 32

#: What train_symbol_windows keeps for a corpus, by (steps, windows): a chunk's layout, its io
#: buffer and the launch making its one-hot rows there.
SymbolFills = dict[tuple[int, int], tuple[Layout, cl_array.Array, Launch]]
#: one_hot_sequences' arguments set per call (kernels/recurrent.cl): the first window, whether
#: every step has a target, the windows' offsets.
ONE_HOT_PER_CALL = {"first": 3, "every": 4, "offsets": 6}


def train_symbol_windows(trainer: WindowTrainer, learning: Optimizer, codes: cl_array.Array,
                         offsets: cl_array.Array, count: int, steps: int, every: bool,
                         fills: SymbolFills) -> cl_array.Array:
    """SymbolCorpus.train in the fused window loop: the `count` windows of `steps` symbols of
    `codes` starting at `offsets`, WINDOW_CHUNK a launch, each chunk's one-hot rows made on the
    device in the loop's layout (`fills` keeps those of the corpus's last WINDOW_FILLS_KEPT
    chunk shapes: a corpus trained on ever new window lengths and counts took memory without
    bound). Returns the metrics' sums (loss, correct steps, steps with a target) on the
    device."""
    device, n = trainer.device, trainer.widths[0]
    sums = device.zeros((3,))
    pending: cl.Event | None = None

    def chunk(size: int) -> tuple[Layout, cl_array.Array, Launch]:
        """A chunk of `size` windows: its layout, io buffer and one-hot launch."""
        layout = trainer.layout(steps, size)
        io = device.zeros((layout.size,))
        rows = steps * size
        x, t, m, lengths = (flat_view(io, at, shape) for at, shape in zip(
            layout.offsets, ((rows, n), (rows, n), (rows,), (size,)), strict=True))
        lengths.fill(steps)
        return layout, io, device.launch(
            "one_hot_sequences", (rows,), steps, size, n, 0, every, codes, offsets, x, t, m,
            per_call=ONE_HOT_PER_CALL)

    for first in range(0, count, WINDOW_CHUNK):
        size = min(WINDOW_CHUNK, count - first)
        layout, io, fill = recent(fills, (steps, size), functools.partial(chunk, size),
                                  WINDOW_FILLS_KEPT)
        fill.set_all({"first": first, "every": every, "offsets": offsets})
        fill()
        trainer(io, layout, np.full(size, steps), learning, sums)
        if pending is not None:  # bounded: the device runs while the host enqueues
            pending.wait()
        pending = cl.enqueue_marker(device.queue)
    return sums
