"""Grenade's per-example training as one kernel: the device loops over the examples.

For each example in order: forward through every layer, `output - target`, backward, then the
optimiser's update of every layer (Grenade's momentum + L2 step under SGD; Adam's steps count
one per example) — exactly the sequence Grenade's `train` folds — with no
launch or host round trip per example. The loop is assembled from each layer's device-side form
(`Layer.fused_forward` / `fused_backward`), which calls the same OpenCL functions as the layer's
standalone kernels, so the maths exists once; Convolution's is the exception, direct loops over
one sample (its batched kernels are GEMMs over many), the same products summed in another
order. A layer may keep memory of its own per example (`Layer.fused_scratch`: Pooling's
picked offsets). The generated source holds the layer types and
sizes as constants (loops of known length unroll and vectorise), so each network shape is a
build of its own, compiled once and then read from the device's cache.

It runs as one work-group: layers are separated by barriers, and lanes share the elements of a
layer. On a CPU one lane runs each layer's loops as plain vectorisable code; on a GPU the lanes
are coalesced (FUSED_COALESCED): neighbouring lanes touch neighbouring words, groups of
FUSED_GROUP lanes sharing each weight row's dot product and summing it in local memory.
Activations and deltas live in buffers of the loop's own, in global memory. Nested
networks and lists of layers are unrolled into one chain; a branching layer (Concat, Merge) has no
device-side form, so such networks train layer by layer.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import pyopencl as cl
import pyopencl.array as cl_array

from grenade_py.device import Device, buffer, named_errors
from grenade_py.kernel_library import kernel_source
from grenade_py.layers import Layer, Series
from grenade_py.losses import SQUARED_ERROR, Loss
from grenade_py.network import Network
from grenade_py.optimizers import Optimizer
from grenade_py.shapes import Shape, size

log = logging.getLogger("grenade_py")

BARRIER = "barrier(CLK_GLOBAL_MEM_FENCE);"
#: Values per 128-byte line in float32 (two lines in float64: over-aligned, which is harmless):
#: where several networks' buffers share one (grenade_py.many), each network's share starts on
#: one.
MANY_LINE = 32


def chain(layer: Layer, in_shape: Shape) -> list[tuple[Layer, Shape]]:
    """The layers run one after another, nested series unrolled, each with its input shape."""
    if not isinstance(layer, Series):
        return [(layer, in_shape)]
    return [item for _, child, shape in layer.children(in_shape) for item in chain(child, shape)]


def unrolled(net: Network, loss: Loss) -> tuple[list[Layer], list[Shape], int]:
    """`net`'s layers as one chain (nested series unrolled), the shapes at its boundaries
    (input first, output last), and the boundary whose delta `loss`'s gradient writes."""
    links = chain(net, net.input_shape)
    layers = [layer for layer, _ in links]
    top = loss.top(net) - (len(net.layers) - len(layers))
    return layers, [shape for _, shape in links] + [net.output_shape], top


def own_buffers(layers: list[Layer], sizes: list[int]) -> list[tuple[str, int]]:
    """The loop's own buffers in its parameters' order, (name, values): each boundary's
    activations a{k} and deltas d{k} after the input, then each layer's scratch s{i}."""
    own = [(f"{v}{k}", sizes[k]) for k in range(1, len(layers) + 1) for v in ("a", "d")]
    return own + [(f"s{i}", layer.fused_scratch()) for i, layer in enumerate(layers)
                  if layer.fused_scratch()]


def fused_source(layers: list[Layer], sizes: list[int], lanes: int = 1, kind: int = 0,
                 many: bool = False, top: int | None = None, from_logits: bool = False
                 ) -> str | None:
    """The fused loop's OpenCL source for a chain of layers run by `lanes` work-items (a power
    of two) under optimiser `kind` (a constant, so the loop holds its rule alone), or None if a
    layer has no device-side form. Each example's error `output - target` is the delta at
    boundary `top` (default: the output, Grenade's squared error; one below it for cross
    entropy, whose gradient p - t enters at the logits, past Softmax's backward pass); the
    backward pass runs from there. The single network's kernel also takes `order` (the
    examples' indices, or NULL: in turn) and `acc` (or NULL): each example's loss before its
    update is added to acc[0] (computed from the logits at `top` if `from_logits`), 1 if it is
    correct to acc[1] and 1 to acc[2], as `Loss.metrics` counts them. `sizes`, the values at
    each boundary (input first), are constants too: the compiler unrolls and vectorises loops
    of known length (the feedforward example's loop ran 1.3x faster than with sizes as
    arguments), at the cost of a build per network shape (kept in the device's cache).

    With `many`, the kernel `fused_train_many` trains one network per work-group (see
    grenade_py.many): group g finds its parameters, moments, activations and deltas at
    g x their size in buffers holding every network's, its optimiser's values in row g of
    `values`, and its examples in the order row g of `order` gives; the loop itself is the
    same code, so each network's arithmetic is its solo run's."""
    count = len(layers)
    top = count if top is None else top
    forward, backward = [], []
    for i, layer in enumerate(layers):
        code = layer.fused_forward(i)
        if code is None:
            return None
        forward.append(code)
    for i in reversed(range(top)):
        code = layers[i].fused_backward(i, input_delta=i > 0)
        if code is None:
            return None
        backward.append(code)
    params = ["int start", "int count", "global const REAL *xs", "global const REAL *ys"]
    params += ["global const REAL *values", "global const int *order", "int examples",
               "global REAL *flat", "int flat_size"] if many else [
        "REAL rate", "REAL beta1", "REAL beta2", "REAL eps", "REAL decay", "REAL p1", "REAL p2",
        "global const int *order", "global REAL *acc"]
    own = own_buffers(layers, sizes)
    params += [f"global REAL *{name}{'_all' if many else ''}" for name, _ in own]
    prologue = [f"const int n{k} = {n};" for k, n in enumerate(sizes)]
    prologue += ["const int g = get_group_id(0);"] if many else []
    for i, layer in enumerate(layers):
        for decl, _ in layer.fused_args(i):
            if many and "*" in decl:  # a view into the flat buffers: an offset into them
                name = decl.split("*")[-1].strip()
                params.append(f"int {name}_at")
                prologue.append(f"global REAL *{name} = flat + (size_t)g * flat_size + "
                                f"{name}_at;")
            else:
                params.append(decl)
    if many:
        # Each group's share starts on its own 128-byte lines (no false sharing).
        prologue += [f"global REAL *{name} = {name}_all + (size_t)g * MANY_PADDED({n});"
                     for name, n in own]
        prologue.append("global const REAL *v = values + 7 * g;")
        make = "optimizer_make(FUSED_OPTIMIZER, v[0], v[1], v[2], v[3], v[5], v[6])"
        decay = "const REAL decay = v[4];"
        example = "order[(size_t)g * examples + e]"
    else:
        make = "optimizer_make(FUSED_OPTIMIZER, rate, beta1, beta2, eps, p1, p2)"
        decay, example = "", "order ? order[e] : e"
    # Every pointer argument is a buffer of its own: saying so lets the compiler vectorise the
    # update loops without run-time alias checks (~8% faster on PoCL).
    params = [p.replace(" *", " *restrict ") for p in params]
    metrics = [] if many else [
        f"if (acc && lid == 0) {{ acc[0] += loss_row_at(n{count}, {int(from_logits)}, a{count}, "
        f"a{top}, t); acc[1] += correct_row_at(n{count}, a{count}, t); acc[2] += 1; }}"]
    body = f"\n{BARRIER}\n".join(forward + metrics + [
        f"for (int k = lid; k < n{count}; k += nl) "
        f"d{top}[k] = loss_gradient_at(a{count}[k], t[k], 1);"
    ] + [code for code in backward if code])
    return f"""
#define FUSED_COALESCED {int(lanes > 1)}
#define FUSED_LANES {lanes}
#define FUSED_GROUP {min(32, lanes)}
#define FUSED_OPTIMIZER {kind}
#define MANY_PADDED(n) (((n) + MANY_LINE - 1) / MANY_LINE * MANY_LINE)
#define MANY_LINE {MANY_LINE}
kernel void fused_train{"_many" if many else ""}({", ".join(params)}) {{
    const int lid = get_local_id(0), nl = get_local_size(0);
#if FUSED_COALESCED
    local REAL fused_sums[FUSED_LANES];
#endif
    {" ".join(prologue)} {decay}
    optimizer opt = {make};
    for (int e = start; e < start + count; ++e, opt = optimizer_next(opt)) {{
        const int x = {example};
        global const REAL *a0 = xs + (size_t)x * n0;
        global const REAL *t = ys + (size_t)x * n{count};
{body}
{BARRIER}
    }}
}}
"""


def build_loop(device: Device, name: str, source: Callable[[int], str | None]
               ) -> tuple[cl.Kernel, int] | None:
    """Kernel `name` of the loop `source(lanes)` writes for a number of lanes, and its
    work-group size: `lanes`, halved until this build of the kernel may run that many; None if
    `source` gives None (a layer without a device-side form)."""
    count = lanes(device)
    while True:
        code = source(count)
        if code is None:
            return None
        kernel = device.kernel(name, device.build(kernel_source() + code))
        if kernel.get_work_group_info(cl.kernel_work_group_info.WORK_GROUP_SIZE,
                                      device.cl_device) >= count:
            return kernel, count
        count //= 2


def lanes(device: Device) -> int:
    """Work-items in the loop's one work-group: 1 on CPUs (each layer's loops then run as plain
    vectorisable code), on GPUs the largest power of two up to 256 the device allows."""
    if not device.gpu:
        return 1
    return 1 << (int(min(256, device.cl_device.max_work_group_size)).bit_length() - 1)


class FusedTrainer:
    """The fused per-example loop of one network, its arguments set once."""

    def __init__(self, net: Network, layers: list[Layer], shapes: list[Shape],
                 kind: int, top: int, from_logits: bool) -> None:
        device = net.device
        self.device, self.net = device, net
        widths = [size(shape) for shape in shapes]
        built = build_loop(device, "fused_train",
                           lambda count: fused_source(layers, widths, count, kind, top=top,
                                                      from_logits=from_logits))
        assert built is not None
        self.kernel, self.lanes = built
        # Arguments 0-12 (range, data, optimiser, order, metrics) are set per call; the rest
        # once.
        # The loop's activations and deltas are its own; `self.held` keeps every buffer the
        # kernel uses alive as long as the loop.
        self.held: list[Any] = [device.zeros((n,)) for _, n in own_buffers(layers, widths)]
        for i, layer in enumerate(layers):
            self.held += [value for _, value in layer.fused_args(i)]
        fixed = [buffer(a) if isinstance(a, cl_array.Array) else a for a in self.held]
        for index, value in enumerate(fixed, start=13):
            self.kernel.set_arg(index, value)

    def __call__(self, xs: cl_array.Array, ys: cl_array.Array, start: int, count: int,
                 optimizer: Optimizer, order: cl_array.Array | None = None,
                 acc: cl_array.Array | None = None) -> None:
        """Enqueue one optimiser step per example for examples start .. start + count - 1 of
        xs/ys, or of the indices in `order` (the network's step count advances by `count`);
        with `acc`, add their loss, correct count and count to acc[0:3]."""
        k, real = self.kernel, np.dtype(self.device.dtype).type
        k.set_arg(2, buffer(xs))
        k.set_arg(3, buffer(ys))
        values = (*optimizer.kernel_values(), *optimizer.powers(self.net.steps + 1))
        for index, value in enumerate(values, start=4):
            k.set_arg(index, real(value))
        k.set_arg(11, None if order is None else buffer(order))
        k.set_arg(12, None if acc is None else buffer(acc))
        k.set_arg(0, np.int32(start))
        k.set_arg(1, np.int32(count))
        self.net.steps += count
        with named_errors(f"run the fused training loop on {self.device.name}"):
            cl.enqueue_nd_range_kernel(self.device.queue, k, (self.lanes,), (self.lanes,))


def fused_trainer(net: Network, kind: int = 0, loss: Loss = SQUARED_ERROR
                  ) -> FusedTrainer | None:
    """A fused loop for `net` under optimiser `kind` and `loss`, or None where a layer lacks a
    device-side form: the runner then trains layer by layer, with identical results."""
    layers, shapes, top = unrolled(net, loss)
    missing = [repr(layer) for i, layer in enumerate(layers)
               if layer.fused_forward(i) is None
               or (i < top and layer.fused_backward(i, input_delta=i > 0) is None)]
    if missing:
        log.debug("no fused per-example loop for %r (no device-side form: %s); training "
                  "layer by layer", net, ", ".join(missing))
        return None
    return FusedTrainer(net, layers, shapes, kind, top, loss.from_logits)
