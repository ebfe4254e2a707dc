"""Grenade's per-example training as one kernel: the device loops over the examples.

For each example in order: forward through every layer, `output - target`, backward, then the
optimiser's update of every layer (Grenade's momentum + L2 step under SGD; Adam's steps count
one per example) — exactly the sequence Grenade's `train` folds — with no
launch or host round trip per example. The loop is assembled from each layer's device-side form
(`Layer.fused_forward` / `fused_backward`), which calls the same OpenCL functions as the layer's
standalone kernels, so the maths exists once; Convolution's is the exception, direct loops over
one sample (its batched kernels are GEMMs over many), the same products summed in another
order. A layer may keep memory of its own per example (`Layer.fused_scratch`: Pooling's
picked offsets, Convolution's padded delta). The generated source holds the layer types and
sizes as constants (loops of known length unroll and vectorise), so each network shape is a
build of its own, compiled once and then read from the device's cache. Layers without a form
(Dropout, BatchNorm, the recurrent layers) make the network train layer by layer, with the same
results.

It runs as one work-group: layers are separated by barriers, and lanes share the elements of a
layer. On a CPU one lane runs each layer's loops as plain vectorisable code; on a GPU the lanes
are coalesced (FUSED_COALESCED): neighbouring lanes touch neighbouring words, groups of
FUSED_GROUP lanes sharing each weight row's dot product and summing it in local memory.
Activations and deltas live in buffers of the loop's own, in global memory. Nested
networks and lists of layers are unrolled into one chain; a branching layer's (Concat, Merge)
branches are chains of their own (`LoopPlan`).
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyopencl as cl
import pyopencl.array as cl_array

from grenade_py.device import Device, Launch, buffer
from grenade_py.kernel_library import called_only, kernel_source
from grenade_py.layers import Concat, Convolution, Deconvolution, Layer, Pad, Series
from grenade_py.layers.branches import Branches
from grenade_py.losses import SQUARED_ERROR, Loss
from grenade_py.network import Network, view_place
from grenade_py.network_file import ROLES
from grenade_py.optimizers import VALUES, Optimizer, take_state, value_slots
from grenade_py.shapes import D2, D3, Shape, size
from grenade_py.waits import polls, read, wait

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


def needed(before: Layer | None, layer: Layer) -> dict[str, tuple[int, int, int, int]]:
    """What `layer`'s fused backward pass is told of the layer `before` it: a Convolution
    after a Pad, that only the interior of its input delta is read (its border is zeros'
    delta, which Pad's backward pass drops): {"needed": (top, left, rows, cols)}."""
    if type(layer) is Convolution and type(before) is Pad:
        shape = before.in_shape
        assert isinstance(shape, (D2, D3))
        return {"needed": (before.top, before.left, shape.rows, shape.cols)}
    return {}


def flat_place(layer: Layer, view: cl_array.Array) -> tuple[int, int]:
    """Where one of `layer`'s views into its network's flat buffers lies: the index of its role
    in ROLES (parameters, momentum, second) and its offset in that buffer, in values (a
    generated loop that takes the flat buffers finds the parameters there)."""
    role = next(r for r, name in enumerate(ROLES)
                if any(view is value for value in getattr(layer, name).values()))
    return role, view_place(view)[1]


def joined(statements: list[str]) -> str:
    """The statements that are not empty, a barrier between each two."""
    return f"\n{BARRIER}\n".join(code for code in statements if code)


def loop_header(lanes: int) -> str:
    """The defines the layers' fused forms read for `lanes` work-items (before the kernel)."""
    return (f"#define FUSED_COALESCED {int(lanes > 1)}\n#define FUSED_LANES {lanes}\n"
            f"#define FUSED_GROUP {min(32, lanes)}\n")


#: The locals the layers' fused forms read (the kernel's first statements): lane index and
#: count, and where coalesced, local memory for the groups' sums.
LOOP_LOCALS = """    const int lid = get_local_id(0), nl = get_local_size(0);
#if FUSED_COALESCED
    local REAL fused_sums[FUSED_LANES];
#endif"""


@dataclass
class LoopPlan:
    """The fused loop's layers, numbered for its source. Layer k reads boundary k (values a{k},
    their delta d{k}, n{k} of them) and writes boundary k + 1. Each branch of a branching layer
    (Concat, Merge) is a chain of its own whose ends are pointers into the join's boundaries
    (Concat's branches write the two parts of its output; Merge's read one delta), so that a
    join copies nothing but Merge's sum and the sum of the input deltas."""

    numbered: list[tuple[int, Layer]] = field(default_factory=list)
    sizes: dict[int, int] = field(default_factory=dict)
    #: The loop's own buffers in its parameters' order, (name, values).
    own: list[tuple[str, int]] = field(default_factory=list)
    #: Boundaries that are other boundaries' values: pointer declarations, in order.
    aliases: list[str] = field(default_factory=list)
    forward: list[str] = field(default_factory=list)
    #: The backward statements in the forward pass's order (they run reversed).
    backward: list[str] = field(default_factory=list)
    #: Layers without a device-side form.
    missing: list[str] = field(default_factory=list)
    end: int = 0
    top: int = 0

    def boundary(self, shape: Shape, values: str | None = None, delta: str | None = None
                 ) -> int:
        """A new boundary: buffers of the loop's own, or pointers `values`, `delta`."""
        k = len(self.sizes)
        self.sizes[k] = size(shape)
        for v, pointer in (("a", values), ("d", delta)):
            if pointer is None:
                self.own.append((f"{v}{k}", size(shape)))
            else:
                self.aliases.append(f"global REAL *{v}{k} = {pointer};")
        return k

    def chain(self, links: list[tuple[Layer, Shape]], k: int, input_delta: bool,
              end: tuple[str | None, str | None] = (None, None), trained: int | None = None
              ) -> list[int]:
        """The layers `links` run from boundary k, the last boundary `end`'s pointers where
        given; those from position `trained` on run forward only; a layer computes its input
        delta where `input_delta` or a layer before it in the chain has parameters. The
        boundaries, in order."""
        at = [k]
        for p, (layer, shape) in enumerate(links):
            last = end if p == len(links) - 1 else (None, None)
            out = layer.out_shape(shape)
            if isinstance(layer, Branches):
                k = self.branches(layer, shape, out, k, input_delta, last)
            else:
                forward = layer.fused_forward(k)
                backward = "" if trained is not None and p >= trained else \
                    layer.fused_backward(k, input_delta, **needed(links[p - 1][0] if p else None,
                                                                  layer))
                if forward is None or backward is None:
                    self.missing.append(repr(layer))
                self.numbered.append((k, layer))
                scratch = layer.fused_scratch()
                if scratch:
                    self.own.append((f"s{k}", scratch))
                self.forward.append(forward or "")
                self.backward.append(backward or "")
                k = self.boundary(out, *last)
                assert k == self.numbered[-1][0] + 1  # the forms write a{k + 1}
            input_delta = input_delta or layer.trainable()
            at.append(k)
        return at

    def branches(self, layer: Branches, shape: Shape, out: Shape, k: int, input_delta: bool,
                 end: tuple[str | None, str | None]) -> int:
        """Both branches from boundary k into the join's output: a new boundary (`end`'s
        pointers where given), returned."""
        join = self.boundary(out, *end)
        width = size(layer.a.out_shape(shape))
        ends: list[tuple[str | None, str | None]]
        if isinstance(layer, Concat):
            ends = [(f"a{join}", f"d{join}"), (f"a{join} + {width}", f"d{join} + {width}")]
        else:
            ends = [(None, f"d{join}"), (None, f"d{join}")]
        starts = [self.boundary(shape, f"a{k}", f"d{k}" if input_delta else None)]
        added = len(self.backward)  # runs after both branches' backward passes
        self.backward.append("")
        last = [self.chain(chain(layer.a, shape), starts[0], input_delta, ends[0])[-1]]
        starts.append(self.boundary(shape, f"a{k}"))
        last.append(self.chain(chain(layer.b, shape), starts[1], input_delta, ends[1])[-1])
        if input_delta:  # d{k} = a's delta (written there) + b's
            self.backward[added] = (f"for (int q = lid; q < n{k}; q += nl) "
                                    f"d{k}[q] += d{starts[1]}[q];")
        if not isinstance(layer, Concat):
            self.forward.append(f"for (int q = lid; q < n{join}; q += nl) "
                                f"a{join}[q] = a{last[0]}[q] + a{last[1]}[q];")
        # A layer after the join writes the boundary after its own: a new one, the join's.
        return self.boundary(out, f"a{join}", f"d{join}") if end == (None, None) else join


def plan_loop(layers: list[Layer], shapes: list[Shape], top: int, input_delta: bool = False
              ) -> LoopPlan:
    """The loop of the chain `layers` (input shape first in `shapes`), trained from boundary
    `top` of the chain (see fused_source); with `input_delta`, the first layer's backward
    pass writes the delta at the input too, d0 (a buffer its user declares)."""
    plan = LoopPlan()
    plan.sizes[0] = size(shapes[0])
    at = plan.chain(list(zip(layers, shapes[:-1], strict=True)), 0, input_delta, trained=top)
    plan.end, plan.top = at[-1], at[top]
    return plan


def fused_source(plan: LoopPlan, lanes: int = 1, kind: int = 0, many: bool = False,
                 from_logits: bool = False) -> str | None:
    """The fused loop's OpenCL source for the planned layers run by `lanes` work-items (a power
    of two) under optimiser `kind` (a constant, so the loop holds its rule alone), or None if a
    layer has no device-side form. Each example's error `output - target` is the delta at
    the plan's `top` boundary (the output under Grenade's squared error; the logits under cross
    entropy, whose gradient p - t enters past Softmax's backward pass); the backward pass runs
    from there. The single network's kernel also takes `order` (the examples' indices, or
    NULL: in turn) and `acc` (or NULL): each example's loss before its update is added to
    acc[0] (computed from the logits at `top` if `from_logits`), 1 if it is correct to acc[1]
    and 1 to acc[2], as `Loss.metrics` counts them. The sizes at the boundaries are constants:
    the compiler unrolls and vectorises loops of known length (the feedforward example's loop
    ran 1.3x faster than with sizes as arguments), at the cost of a build per network shape
    (kept in the device's cache).

    With `many`, the kernel `fused_train_many` trains one network per work-group (see
    grenade_py.many): group g finds its parameters, moments, activations and deltas at
    g x their size in buffers holding every network's (a buffer per role, as the single loop
    takes a buffer per array: the compiler then knows that a parameter and its moment never
    overlap, and vectorises the updates without checking), its optimiser's values in row g of
    `values`, and its examples in the order row g of `order` gives; the loop itself is the
    same code, so each network's arithmetic is its solo run's."""
    if plan.missing:
        return None
    end, top, own = plan.end, plan.top, plan.own
    params = ["int start", "int count", "global const REAL *xs", "global const REAL *ys"]
    params += ["global const REAL *values", "global const int *order", "int examples",
               *(f"global REAL *{role}_all" for role in ROLES), "int flat_size"] if many else [
        *(f"REAL {name}" for name in VALUES), "global const int *order", "global REAL *acc"]
    params += [f"global REAL *{name}{'_all' if many else ''}" for name, _ in own]
    prologue = [f"const int n{k} = {n};" for k, n in plan.sizes.items()]
    prologue += ["const int g = get_group_id(0);"] if many else []
    for i, layer in plan.numbered:
        for decl, value in layer.fused_args(i):
            if many and "*" in decl:  # a view into a flat buffer: an offset into its role's
                name = decl.split("*")[-1].strip()
                params.append(f"int {name}_at")
                prologue.append(f"global REAL *{name} = {ROLES[flat_place(layer, value)[0]]}_all + "
                                f"(size_t)g * flat_size + {name}_at;")
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
        f"if (acc && lid == 0) {{ acc[0] += loss_row_at(n{end}, {int(from_logits)}, a{end}, "
        f"a{top}, t); acc[1] += correct_row_at(n{end}, a{end}, t); acc[2] += 1; }}"]
    body = "\n".join(plan.aliases) + "\n" + joined(
        plan.forward + metrics + [f"for (int k = lid; k < n{end}; k += nl) "
                                  f"d{top}[k] = loss_gradient_at(a{end}[k], t[k], 1);"]
        + plan.backward[::-1])
    return f"""
{loop_header(lanes)}#define FUSED_OPTIMIZER {kind}
#define MANY_PADDED(n) (((n) + MANY_LINE - 1) / MANY_LINE * MANY_LINE)
#define MANY_LINE {MANY_LINE}
kernel void fused_train{"_many" if many else ""}({", ".join(params)}) {{
{LOOP_LOCALS}
    {" ".join(prologue)} {decay}
    optimizer opt = {make};
    for (int e = start; e < start + count; ++e, opt = optimizer_next(opt)) {{
        const int x = {example};
        global const REAL *a0 = xs + (size_t)x * n0;
        global const REAL *t = ys + (size_t)x * n{end};
{body}
{BARRIER}
    }}
}}
"""


def run_source(plan: LoopPlan, lanes: int = 1) -> str:
    """The OpenCL source of `fused_run(count, xs, out, ...)`: the planned layers' forward
    passes (their fused forms) of samples 0 .. count - 1 of xs (count, n0), one after another,
    each output into its row of out (count, n_end)."""
    params = ["int count", "global const REAL *xs", "global REAL *out",
              *(f"global REAL *{name}" for name, _ in plan.own)]
    params += [decl for i, layer in plan.numbered for decl, _ in layer.fused_args(i)]
    params = [p.replace(" *", " *restrict ") for p in params]
    end = plan.end
    body = "\n".join(plan.aliases) + "\n" + joined(plan.forward + [
        f"for (int k = lid; k < n{end}; k += nl) out[(size_t)e * n{end} + k] = a{end}[k];"])
    return f"""
{loop_header(lanes)}kernel void fused_run({", ".join(params)}) {{
{LOOP_LOCALS}
    {" ".join(f"const int n{k} = {n};" for k, n in plan.sizes.items())}
    for (int e = 0; e < count; ++e) {{
        global const REAL *a0 = xs + (size_t)e * n0;
{body}
{BARRIER}
    }}
}}
"""


#: The kernel files whose functions the generated loops call (besides FOUNDATIONS).
LOOP_FILES = ("fully_connected.cl", "pooling.cl", "recurrent.cl", "reshape.cl", "softmax.cl")


#: The most arguments a kernel may take on any device (OpenCL 3.0's limit).
MAX_ARGUMENTS = 255


def arguments_fit(device: Device, code: str, name: str) -> bool:
    """Whether kernel `name` of `code` takes arguments the device compiles: at most
    MAX_ARGUMENTS, of at most its max_parameter_size bytes in all (NVIDIA's and Intel's
    compilers refuse more). PoCL's CPU device is not checked: it reports 1,024 bytes but runs
    the loop of a 120-layer MLP (over 1,000 arguments)."""
    if not device.gpu and device.cl_device.platform.name.startswith("Portable Computing"):
        return True
    start = code.index(f"kernel void {name}(") + len(f"kernel void {name}(")
    declared = code[start:code.index(")", start)].split(",")
    pointer, real = device.cl_device.address_bits // 8, np.dtype(device.dtype).itemsize
    total = sum(pointer if "*" in d else real if "REAL" in d else 4 for d in declared)
    return len(declared) <= MAX_ARGUMENTS and total <= device.cl_device.max_parameter_size


def build_loop(device: Device, name: str, source: Callable[[int], str | None]
               ) -> tuple[cl.Kernel, int] | None:
    """Kernel `name` of the loop `source(lanes)` writes for a number of lanes, and its
    work-group size: `lanes`, halved until this build of the kernel may run that many; None if
    `source` gives None (a layer without a device-side form) or a kernel whose arguments the
    device does not take (`arguments_fit`: the caller runs layer by layer). Built with the
    functions it calls of LOOP_FILES' part of the kernel library only."""
    count = lanes(device)
    while True:
        code = source(count)
        if code is None:
            return None
        if not arguments_fit(device, code, name):
            log.debug("no %s loop: its arguments are more than %s takes", name, device.name)
            return None
        library = kernel_source(LOOP_FILES)
        kernel = device.kernel(name, device.build(called_only(library, code) + code))
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


def loop_arguments(device: Device, plan: LoopPlan) -> list[Any]:
    """A single loop's trailing arguments, in the order its source declares them: its own
    activations and deltas (new buffers), then the layers' arguments (`fused_args`)."""
    return [device.zeros((n,)) for _, n in plan.own] + [
        value for i, layer in plan.numbered for _, value in layer.fused_args(i)]


class FusedTrainer:
    """The fused per-example loop of one network (`built` by build_loop from its `plan`), its
    arguments set once."""

    def __init__(self, net: Network, plan: LoopPlan, built: tuple[cl.Kernel, int]) -> None:
        device = net.device
        self.net = net
        kernel, lanes = built
        fixed = loop_arguments(device, plan)
        per_call = {"start": 0, "count": 1, "xs": 2, "ys": 3} | value_slots(4) | {
            "order": 11, "acc": 12}
        self.launch = Launch(device, kernel, (lanes,), (0, 0, None, None, *(
            device.dtype(0) for _ in VALUES), None, None, *fixed), (lanes,), per_call)

    def __call__(self, xs: cl_array.Array, ys: cl_array.Array, start: int, count: int,
                 optimizer: Optimizer, order: cl_array.Array | None = None,
                 acc: cl_array.Array | None = None) -> None:
        """Enqueue one optimiser step per example for examples start .. start + count - 1 of
        xs/ys, or of the indices in `order` (the network's step count advances by `count`);
        with `acc`, add their loss, correct count and count to acc[0:3]."""
        take_state(self.net, optimizer)
        self.launch.set_all(optimizer.arguments(self.net.steps + 1, self.net.device.dtype) | {
            "xs": xs, "ys": ys, "order": order, "acc": acc, "start": start, "count": count})
        self.net.steps += count
        self.launch()

    def release(self) -> None:
        """Let go of the last call's data (its examples, order and sums), once its work is
        done: the loop is held on the network from call to call, and would otherwise keep a
        whole dataset on the device until the next."""
        self.launch.set_all({"xs": None, "ys": None, "order": None, "acc": None})


def fused_trainer(net: Network, kind: int = 0, loss: Loss = SQUARED_ERROR
                  ) -> FusedTrainer | None:
    """A fused loop for `net` under optimiser `kind` and `loss`, or None where a layer lacks a
    device-side form or the loop's arguments do not fit the device (`arguments_fit`): the
    runner then trains layer by layer, with the same results (to the bit; convolutions, and
    every layer on a GPU, to rounding)."""
    plan = plan_loop(*unrolled(net, loss))
    if plan.missing:
        log.debug("no fused per-example loop for %r (no device-side form: %s); training "
                  "layer by layer", net, ", ".join(plan.missing))
        return None
    built = build_loop(net.device, "fused_train", lambda count: fused_source(
        plan, count, kind, from_logits=loss.from_logits))
    return None if built is None else FusedTrainer(net, plan, built)


#: SVM allocations that the host and the kernels both use in place, without map or unmap.
SHARED: Any = cl.svm_mem_flags.READ_WRITE | cl.svm_mem_flags.SVM_FINE_GRAIN_BUFFER


def shares_memory(device: Device) -> bool:
    """Whether `device` has fine-grained buffer SVM (OpenCL 2.0 and later; PoCL's CPU devices):
    memory the host writes and reads in place, a kernel enqueued after a host write seeing it
    and the host seeing a kernel's writes once it has completed, no copy command between."""
    try:
        capabilities = device.cl_device.svm_capabilities
    except cl.Error:  # an OpenCL 1.x device
        return False
    return bool(capabilities & cl.device_svm_capabilities.FINE_GRAIN_BUFFER)


class FusedRunner:
    """run_net's form for one sample of a small network: its forward pass in one launch of a
    generated loop (the layers' fused forms, which call the functions their kernels call: the
    same bits as a one-row Step's pass), where each layer's kernel is a launch and a wake-up of
    the device's threads. The input and output are in SVM that the host and the loop share
    where the device `shares_memory`: the launch is the call's one command. (With an upload
    and a read around it, on PoCL 3.1 on a 2-core AVX2 EPYC, the MNIST MLP's call took 70 us
    against 52, taking turns; the upload was most of the difference.)"""

    def __init__(self, net: Network, plan: LoopPlan, built: tuple[cl.Kernel, int]) -> None:
        device = net.device
        kernel, lanes = built
        shapes = (1, size(net.input_shape)), (1, size(net.output_shape))
        #: The input and output in shared memory, or None (device arrays, copied to and from).
        self.shared: list[Any] | None = [
            cl.svm_empty(device.context, SHARED, shape, np.dtype(device.dtype))
            for shape in shapes] if shares_memory(device) else None
        ends: list[Any] = [device.zeros(shape) for shape in shapes] \
            if self.shared is None else [cl.SVM(array) for array in self.shared]
        self.input, self.output = ends
        fixed = loop_arguments(device, plan)
        self.launch = Launch(device, kernel, (lanes,), (1, self.input, self.output, *fixed),
                             (lanes,))
        #: Whether the host polls for the result (`waits.polls`) rather than sleeping.
        self.polls = polls(device, 1, net.parameter_count)

    def __call__(self, x: np.ndarray, out: np.ndarray) -> None:
        """out (1, *output.dims) = the output for x (1, *input.dims)."""
        queue = self.launch.queue
        if self.shared is not None:
            self.shared[0][...] = x.reshape(self.shared[0].shape)
            wait(queue, self.launch(), self.polls)
            out[...] = self.shared[1].reshape(out.shape)
            return
        # Not waited for: the read waits (pyopencl waits for a copy whose event is dropped).
        upload = cl.enqueue_copy(queue, buffer(self.input), x, is_blocking=False)
        self.launch()
        read(queue, out, self.output, self.polls)
        del upload


def fused_runner(net: Network) -> FusedRunner | None:
    """A FusedRunner of `net`, or None: where a layer has no device-side form, or where the
    forms would not give the kernels' bits (`kernels_bits`; on a GPU a launch costs less)."""
    layers, shapes, _ = unrolled(net, SQUARED_ERROR)
    plan = plan_loop(layers, shapes, 0)
    built = build_loop(net.device, "fused_run", lambda count: run_source(plan, count)) \
        if not plan.missing and kernels_bits(net) else None
    return None if built is None else FusedRunner(net, plan, built)


def kernels_bits(net: Network) -> bool:
    """Whether the fused forms of `net`'s layers give the bits of a one-row Step's kernels:
    on a CPU, where no layer is a convolution (whose fused form, direct loops over one sample,
    sums in another order than its kernels; on a GPU the loop's lanes share a row's sum in
    another order than the tiled GEMMs)."""
    return not net.device.gpu and not any(isinstance(node, (Convolution, Deconvolution))
                                          for _, node, _ in net.nodes(net.input_shape))
