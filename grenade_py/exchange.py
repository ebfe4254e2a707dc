"""Grenade's GAN step (examples/main/gan-mnist.hs, trainExample) as one kernel: the device loops
over the examples, each example's whole exchange between a generator and a discriminator run
without a launch per layer or a host round trip.

Per example, as examples/gan_mnist.py's train_step does it at batch 1 with run_network,
run_gradient and apply_update:
1. the generator's forward pass from the example's noise: a fake;
2. the discriminator's forward pass on the real image and on the fake (two sets of tapes);
3. from the weights before this example's steps, the discriminator's gradients for the real
   (delta: verdict - 1) and for the fake (delta: verdict), and for the fake against target 1
   (delta: verdict - 1) the delta at its input;
4. the generator's backward pass from that delta, stepping its optimiser as it goes (as the
   fused per-example loop does); the discriminator's two steps, the real's gradient then the
   fake's, over its flat buffers (`Update`'s rule, `optimizer_at`).
The discriminator's verdict on each fake is kept (1: it was fooled).

The code is the fused per-example loop's (grenade_py.fused): each network's plan and its
layers' forms, each pass in a block whose declarations name that network's parameters and that
pass's tapes. A pass that computes gradients without applying them runs the backward forms
with `optimizer_at` redefined to store each gradient at its parameter's place in a buffer laid
out as the flat buffers; the input delta's pass defines it (and the kernel-gradient sums) away.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pyopencl as cl
import pyopencl.array as cl_array

from grenade_py.device import buffer, named_errors
from grenade_py.errors import GrenadeError
from grenade_py.fused import (
    BARRIER,
    LOOP_LOCALS,
    LoopPlan,
    build_loop,
    flat_place,
    joined,
    loop_header,
    plan_loop,
    unrolled,
)
from grenade_py.inputs import ONE_DEVICE
from grenade_py.losses import SQUARED_ERROR
from grenade_py.network import Network
from grenade_py.network_file import ROLES
from grenade_py.optimizers import VALUES, Optimizer, take_state

#: Redefinitions of the layers' update calls for a pass: store the gradient into GRADS (a
#: buffer of the discriminator's flat layout, whose parameters are `dp`), or compute nothing.
#: (Each with its parameters named: OpenCL C has no variadic macros, and NVIDIA's compiler
#: refuses them where PoCL's accepts them.)
STORE = "#define optimizer_at(o, dc, g, w, m, v, i) (GRADS[(w) - dp + (i)] = (g))"
NOTHING = ("#define optimizer_at(o, dc, g, w, m, v, i) ((void)0)\n"
           "#define conv_direct_kernel_block(H, W, kh, kw, sh, F, OH, OW, nb, x, dy, c, a, f0, b0, "
           "g) ((void)0)\n"
           "#define conv_direct_kernel_grads(H, W, kh, kw, sh, sw, OH, OW, x, dy, c, a, f, b0, g) "
           "((void)0)")
UNDEFINE = ("#undef optimizer_at\n#undef conv_direct_kernel_block\n"
            "#undef conv_direct_kernel_grads\n#undef GRADS")


class Exchange:
    """The fused GAN step of `discriminator` (its output one verdict) and `generator` (its
    output the discriminator's input), on their device; its fixed arguments set once."""

    def __init__(self, discriminator: Network, generator: Network) -> None:
        d, g = discriminator, generator
        d.check_runnable()
        g.check_runnable()
        if d.device is not g.device:
            raise ValueError(f"the discriminator and the generator must be on one Device "
                             f"object {ONE_DEVICE}")
        if g.output_shape != d.input_shape or int(np.prod(d.output_shape.dims)) != 1:
            raise ValueError(f"the generator must give the discriminator's input "
                             f"({d.input_shape!r}) and the discriminator one verdict, not "
                             f"{g.output_shape!r} and {d.output_shape!r}")
        self.d, self.g, self.device = d, g, d.device
        d_chain, g_chain = unrolled(d, SQUARED_ERROR), unrolled(g, SQUARED_ERROR)
        self.plans = {"d": plan_loop(*d_chain[:2], len(d_chain[0])),
                      "push": plan_loop(*d_chain[:2], len(d_chain[0]), input_delta=True),
                      "g": plan_loop(*g_chain[:2], len(g_chain[0]))}
        missing = list(dict.fromkeys(m for plan in self.plans.values() for m in plan.missing))
        if missing:
            raise GrenadeError(f"{', '.join(missing)}: no device-side form, so the exchange "
                               "cannot run in one kernel; run it layer by layer")
        if f"a{self.plans['g'].end}" not in dict(self.plans["g"].own):
            raise GrenadeError("the generator's output must be a buffer of its own")
        # The tapes: the generator's; the discriminator's of the real and of the fake, with the
        # fake's input delta.
        own = [(f"{tape}_{name}", n) for tape, plan in (("g", self.plans["g"]),
                                                        ("r", self.plans["d"]),
                                                        ("f", self.plans["d"]))
               for name, n in plan.own]
        self.own = own + [("f_d0", self.plans["d"].sizes[0])]
        count = d.flat["parameters"].size
        #: Every buffer the kernels take after their per-call arguments, in order.
        self.held: list[Any] = [d.flat[r] for r in ROLES] + [
            self.device.zeros((count,)) for _ in range(2)] + [
            g.flat[r] for r in ROLES] + [self.device.zeros((n,)) for _, n in self.own]
        self.kernels: dict[tuple[int, int], tuple[cl.Kernel, int]] = {}

    def kernel(self, kinds: tuple[int, int]) -> tuple[cl.Kernel, int]:
        """The kernel for the discriminator's and the generator's optimiser kinds (constants
        in its source), its fixed arguments set, and its lanes; built on first use."""
        if kinds not in self.kernels:
            built = build_loop(self.device, "gan_exchange",
                               lambda lanes: self.source(lanes, *kinds))
            if built is None:
                raise GrenadeError(f"the exchange's kernel takes more arguments than "
                                   f"{self.device.name} does; run it layer by layer")
            for index, value in enumerate(self.held, start=5 + 2 * len(VALUES)):
                built[0].set_arg(index, buffer(value))
            self.kernels[kinds] = built
        return self.kernels[kinds]

    def _declare(self, net: Network, plan: LoopPlan, tape: str, prefix: str,
                 **pointers: str) -> str:
        """Declarations naming, inside a pass's block, the sizes, a tape's buffers (or the
        `pointers` given by name) and `net`'s parameters (at their offsets in its flat buffers,
        whose pointers are prefix + p, m, v)."""
        lines = [f"const int n{k} = {n};" for k, n in plan.sizes.items()]
        lines += [f"global REAL *{name} = {pointers.get(name, f'{tape}_{name}')};"
                  for name, _ in plan.own]
        lines += [f"global {'const ' * (name == 'a0')}REAL *{name} = {value};"  # as fused_source
                  for name, value in pointers.items() if name not in dict(plan.own)]
        lines += plan.aliases
        for i, layer in plan.numbered:
            for decl, value in layer.fused_args(i):
                if "*" not in decl:
                    lines.append(f"const {decl} = {float(value).hex()};")
                    continue
                role, offset = flat_place(layer, value)
                lines.append(f"{decl} = {prefix}{'pmv'[role]} + {offset};")
        return "\n".join(lines)

    def source(self, lanes: int, d_kind: int = 0, g_kind: int = 0) -> str:
        """The kernel for `lanes` work-items (see grenade_py.fused.fused_source) and the two
        networks' optimiser kinds."""
        d, g = self.d, self.g
        dp, pp, gp = self.plans["d"], self.plans["push"], self.plans["g"]
        end, g_end = dp.end, gp.end
        params = ["int start", "int count", "global const REAL *images",
                  "global const REAL *noise", "global REAL *verdicts"]
        params += [f"REAL {who}_{v}" for who in "dg" for v in VALUES]
        params += [f"global REAL *restrict {name}" for name in (
            "dp", "dm", "dv", "grads_real", "grads_fake", "gp", "gm", "gv")]
        params += [f"global REAL *restrict {name}" for name, _ in self.own]

        def block(code: str) -> str:
            return f"{{\n{code}\n}}\n{BARRIER}"

        error = "for (int k = lid; k < n{e}; k += nl) d{e}[k] = a{e}[k]{minus};\n" + BARRIER
        # The inputs of the example's passes: its noise, its image, the generator's fake.
        z, real, fake = "noise + (size_t)x * n0", "images + (size_t)x * n0", f"g_a{g_end}"
        passes = [
            # 1-2: the forward passes
            block(self._declare(g, gp, "g", "g", a0=z) + "\n" + joined(gp.forward)),
            block(self._declare(d, dp, "r", "d", a0=real) + "\n" + joined(dp.forward)),
            block(self._declare(d, dp, "f", "d", a0=fake) + "\n" +
                  joined(dp.forward) + f"\n{BARRIER}\nif (lid == 0) verdicts[x] = a{end}[0];"),
            # 3: the discriminator's gradients, and the delta at its input
            "#define GRADS grads_real\n" + STORE + "\n" + block(
                self._declare(d, dp, "r", "d", a0=real) + "\n" +
                error.format(e=end, minus=" - 1") +
                "\n" + joined(dp.backward[::-1])) + "\n" + UNDEFINE,
            "#define GRADS grads_fake\n" + STORE + "\n" + block(
                self._declare(d, dp, "f", "d", a0=fake) + "\n" + error.format(e=end, minus="") +
                "\n" + joined(dp.backward[::-1])) + "\n" + UNDEFINE,
            NOTHING + "\n" + block(
                self._declare(d, pp, "f", "d", a0=fake, d0="f_d0") + "\n" +
                error.format(e=end, minus=" - 1") + "\n" + joined(pp.backward[::-1])) +
            "\n" + UNDEFINE,
            # 4: the generator's backward pass and steps; the discriminator's two steps
            block("const optimizer opt = g_opt; const REAL decay = g_decay;\n" +
                  self._declare(g, gp, "g", "g", a0=z, **{f"d{g_end}": "f_d0"}) + "\n" +
                  joined(gp.backward[::-1])),
            block(f"for (int q = lid; q < {d.flat['parameters'].size}; q += nl) "
                  "optimizer_at(d_opt, d_decay, grads_real[q], dp, dm, dv, q);") +
            "\nd_opt = optimizer_next(d_opt);",
            block(f"for (int q = lid; q < {d.flat['parameters'].size}; q += nl) "
                  "optimizer_at(d_opt, d_decay, grads_fake[q], dp, dm, dv, q);") +
            "\nd_opt = optimizer_next(d_opt);",
        ]
        body = "\n".join(passes)
        return f"""
{loop_header(lanes)}kernel void gan_exchange({", ".join(params)}) {{
{LOOP_LOCALS}
    optimizer d_opt = optimizer_make({d_kind}, d_rate, d_beta1, d_beta2, d_eps, d_p1, d_p2);
    optimizer g_opt = optimizer_make({g_kind}, g_rate, g_beta1, g_beta2, g_eps, g_p1, g_p2);
    for (int x = start; x < start + count; ++x, g_opt = optimizer_next(g_opt)) {{
{body}
    }}
}}
"""

    def __call__(self, images: cl_array.Array, noise: cl_array.Array, verdicts: cl_array.Array,
                 start: int, count: int, d_optimizer: Optimizer, g_optimizer: Optimizer
                 ) -> None:
        """Enqueue the exchange for examples start .. start + count - 1 of `images` (N, *the
        discriminator's input) and `noise` (N, *the generator's input), device arrays;
        verdicts[x] (N values) takes the discriminator's verdict on example x's fake. The
        discriminator steps twice an example, the generator once."""
        k, lanes = self.kernel((d_optimizer.kind, g_optimizer.kind))
        real = np.dtype(self.device.dtype).type
        for index, array in enumerate((images, noise, verdicts), start=2):
            k.set_arg(index, buffer(array))
        at = 5
        for opt, net, steps in ((d_optimizer, self.d, 2), (g_optimizer, self.g, 1)):
            take_state(net, opt)
            for value in opt.arguments(net.steps + 1, real).values():
                k.set_arg(at, real(value))
                at += 1
            net.steps += steps * count
        k.set_arg(0, np.int32(start))
        k.set_arg(1, np.int32(count))
        with named_errors(f"run the GAN exchange on {self.device.name}"):
            cl.enqueue_nd_range_kernel(self.device.queue, k, (lanes,), (lanes,))
