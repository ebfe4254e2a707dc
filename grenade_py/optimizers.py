"""The optimisers: how a step moves the parameters, given their gradients.

Each is a frozen value; its rule is written once in OpenCL (`optimizer_step` in
kernels/optimizers.cl) and used by every training path: minibatch steps, the fused per-example
loop, Grenade's per-step recurrent updates and distributed `fit`. Its state lives in the
network's flat buffers beside the parameters: "momentum" (SGD's momentum, Adam's first moment),
"second" (Adam's second moment) and `Network.steps` (Adam's step count t), all saved in model
files, so a resumed run continues exactly.

- `SGD` / `LearningParameters`: Grenade's descend, `m' = momentum m - rate g;
  w' = w + m' - rate l2 w`, rounded as Grenade rounds it. The default everywhere.
- `Adam`: torch.optim.Adam (L2 `weight_decay` added to the gradient; bias correction).
- `AdamW`: torch.optim.AdamW (decoupled weight decay `w *= 1 - rate weight_decay` first).

`clip_norm` on any of them rescales the whole network's gradient to at most that global L2
norm before the step, as torch.nn.utils.clip_grad_norm_ (and the Grenade fork's
clipByGlobalNorm) do, computed on the device.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np

log = logging.getLogger("grenade_py")

#: The ranges an optimiser's fields are checked against, by how its errors name them.
RANGES: dict[str, Callable[[float], bool]] = {
    "> 0": lambda v: v > 0, ">= 0": lambda v: v >= 0, "in [0, 1)": lambda v: 0 <= v < 1}
#: An optimiser's values as every update kernel takes them, in this order (`Optimizer.values`;
#: kernels/optimizers.cl): the decay is SGD's l2 or Adam's weight_decay, p1 and p2 are
#: beta1^t and beta2^t.
VALUES = ("rate", "beta1", "beta2", "eps", "decay", "p1", "p2")


def value_slots(first: int) -> dict[str, int]:
    """The VALUES as a kernel's arguments first, first + 1, ... (a Launch's `per_call`)."""
    return {name: index for index, name in enumerate(VALUES, start=first)}


class Optimizer:
    """What every optimiser has: a rate and optional global-norm clipping. The subclasses are
    frozen dataclasses, so an optimiser is a value (equal when its fields are)."""

    #: The rule's number in kernels/optimizers.cl, and its kernels' suffix.
    kind: ClassVar[int] = -1
    kernel: ClassVar[str] = ""
    #: What its state in the network's buffers is: one optimiser takes over another's state
    #: only where this is the same (Adam's and AdamW's moments; SGD's momentum is neither).
    state: ClassVar[str] = ""

    #: Each field's range (a key of RANGES); clip_norm may also be None.
    ranges: ClassVar[dict[str, str]] = {"rate": "> 0", "clip_norm": "> 0"}

    rate: float
    clip_norm: float | None

    def __post_init__(self) -> None:
        owner = type(self).__name__
        for field in dataclasses.fields(self):  # type: ignore[arg-type]
            name, value = field.name, getattr(self, field.name)
            if name == "clip_norm" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise ValueError(f"{owner}.{name} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"{owner}.{name} must be finite, got {value!r}")
            if not RANGES[self.ranges[name]](float(value)):
                extra = " (or None)" if name == "clip_norm" else ""
                raise ValueError(f"{owner}.{name} must be {self.ranges[name]}{extra}, got "
                                 f"{value!r}")

    def with_rate(self, rate: float) -> Optimizer:
        """The same optimiser at another rate (a schedule's rate for an epoch)."""
        return dataclasses.replace(self, rate=rate)  # type: ignore[type-var]

    def kernel_values(self) -> tuple[float, float, float, float, float]:
        """(rate, beta1 or momentum, beta2, eps, decay), as the kernels take them."""
        raise NotImplementedError

    def powers(self, t: int, dtype: Any) -> tuple[float, float]:
        """(beta1^t, beta2^t) at step t in precision `dtype` (`power`), for Adam's bias
        corrections; SGD has none."""
        return 0.0, 0.0

    def arguments(self, t: int, dtype: Any) -> dict[str, float]:
        """The update kernels' VALUES at step t (counted from 1) on a device of precision
        `dtype`, by name."""
        return dict(zip(VALUES, (*self.kernel_values(), *self.powers(t, dtype)), strict=True))

    def check(self, dtype: Any) -> None:
        """ValueError if a value (or rate x decay) overflows the device's precision, or a
        value other than 0 is 0 there: below float32's smallest normal number (its kernels
        flush smaller ones to 0; an Adam eps there gave NaN weights wherever a gradient was
        0), or float64's smallest subnormal."""
        real = np.dtype(dtype).type
        rate, *rest = self.kernel_values()
        with np.errstate(over="ignore", invalid="ignore"):  # inf x 0: NaN, refused below
            values = [real(rate), *(real(v) for v in rest), real(rate) * real(rest[-1])]
        if not all(np.isfinite(values)):
            raise ValueError(f"{self}: a value overflows {np.dtype(dtype).name}; use a smaller "
                             "value")
        for field in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, field.name)
            if value is not None and 0 < abs(value) < least(real):
                raise ValueError(f"{self}: {field.name} {value!r} is 0 in {np.dtype(dtype).name} "
                                 f"on the device (below {least(real):.3g}); use a larger value")


@dataclass(frozen=True)
class SGD(Optimizer):
    """Grenade's descent: `m' = momentum m - rate g; w' = w + m' - rate l2 w`.

    Parameters:
        rate: learning rate, finite and > 0.
        momentum: momentum coefficient, 0 <= momentum < 1.
        l2: L2 regulariser (weight decay per unit rate), finite and >= 0.
        clip_norm: rescale the gradient to at most this global L2 norm first (None: never).
    """

    kind: ClassVar[int] = 0
    kernel: ClassVar[str] = "sgd"
    state: ClassVar[str] = "momentum"
    ranges: ClassVar[dict[str, str]] = Optimizer.ranges | {"momentum": "in [0, 1)", "l2": ">= 0"}

    rate: float
    momentum: float = 0.9
    l2: float = 0.0005
    clip_norm: float | None = None

    def kernel_values(self) -> tuple[float, float, float, float, float]:
        return self.rate, self.momentum, 0.0, 0.0, self.l2


@dataclass(frozen=True)
class LearningParameters(SGD):
    """Grenade's `LearningParameters`: an `SGD` under Grenade's name."""


@dataclass(frozen=True)
class Adam(Optimizer):
    """torch.optim.Adam: L2 `weight_decay` added to the gradient, bias-corrected moments.

    Parameters:
        rate: learning rate (torch's lr), > 0.
        beta1, beta2: the moments' decay rates, in [0, 1).
        eps: added to the second moment's root, > 0.
        weight_decay: L2 coefficient, >= 0.
        clip_norm: rescale the gradient to at most this global L2 norm first (None: never).
    """

    kind: ClassVar[int] = 1
    kernel: ClassVar[str] = "adam"
    state: ClassVar[str] = "moments"
    ranges: ClassVar[dict[str, str]] = Optimizer.ranges | {
        "beta1": "in [0, 1)", "beta2": "in [0, 1)", "eps": "> 0", "weight_decay": ">= 0"}

    rate: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    clip_norm: float | None = None

    def kernel_values(self) -> tuple[float, float, float, float, float]:
        return self.rate, self.beta1, self.beta2, self.eps, self.weight_decay

    def check(self, dtype: Any) -> None:
        """As Optimizer.check, and also refuses an eps whose product with sqrt(1 - beta2)
        (the kernels' epsilon at step 1; later steps' are larger) is 0 on the device."""
        super().check(dtype)
        real = np.dtype(dtype).type
        if real(self.eps) * np.sqrt(1 - real(self.beta2)) < least(real):
            raise ValueError(f"{self}: eps {self.eps!r} times sqrt(1 - beta2) is 0 in "
                             f"{np.dtype(dtype).name} on the device (below {least(real):.3g}); "
                             "use a larger eps")

    def powers(self, t: int, dtype: Any) -> tuple[float, float]:
        return power(self.beta1, t, dtype), power(self.beta2, t, dtype)


@dataclass(frozen=True)
class AdamW(Adam):
    """torch.optim.AdamW: Adam with decoupled weight decay (`w *= 1 - rate weight_decay`
    before the step), torch's default weight_decay 0.01."""

    kind: ClassVar[int] = 2
    kernel: ClassVar[str] = "adamw"

    weight_decay: float = 0.01


def least(real: Any) -> float:
    """The least magnitude other than 0 that the kernels hold in precision `real`: float32's
    smallest normal number (they flush smaller ones to 0), float64's smallest subnormal."""
    info = np.finfo(real)
    return float(info.tiny if real == np.float32 else info.smallest_subnormal)


OPTIMIZERS: dict[str, type[Optimizer]] = {"sgd": SGD, "adam": Adam, "adamw": AdamW}

#: Recent `power` results by (beta, precision): beta^t by step t, at most POWERS_KEPT each.
_POWERS: dict[tuple[float, type], dict[int, float]] = {}
POWERS_KEPT = 8


def power(beta: float, t: int, dtype: Any) -> float:
    """beta^t as every update kernel forms Adam's powers: beta multiplied into 1, t times, each
    product rounded to `dtype` (a loop of many steps in one launch, the fused loops and
    Grenade's ordered recurrent steps, advances them so: optimizer_next in
    kernels/optimizers.cl). The host's first step of a launch is this too, so a run gives the
    same bits however its steps fall into launches: per example or in a loop, with or without
    a progress callback. (beta ** t would give another last bit here and there: up to 2e-6 of
    the weights' scale apart after 600 float32 steps, 8e-16 in float64.) Against torch's
    beta ** t it drifts with beta's own rounding (float32's 0.999 is 1.3e-8 from 0.999): 110
    float32 epsilons at t = 1,000, which puts sqrt(1 - beta2^t) 4e-6 from torch's there, as far
    as forming 1 - beta2^t in float32 already puts it at t = 10; in float64 at most 13
    epsilons at t = 10, 100, ..., 100,000. Continues from the nearest step below that it was
    last asked (POWERS_KEPT of them): a training loop's next step is one multiplication."""
    real = np.dtype(dtype).type
    kept = _POWERS.setdefault((beta, real), {})
    found = kept.get(t)
    if found is not None:
        return found
    done = t - 1 if t - 1 in kept else max((s for s in list(kept) if s <= t), default=0)
    start = kept.get(done) if done else 1.0
    if start is None:  # let go of meanwhile by another thread: from the start
        done, start = 0, 1.0
    value, factor = real(start), real(beta)
    for _ in range(min(t - done, 64)):  # numpy scalars: each product rounded to dtype
        value = value * factor
        done += 1
    while done < t:  # in runs, sequentially (np.multiply.accumulate multiplies in order)
        run = min(t - done, 1 << 20)
        factors = np.full(run + 1, factor, dtype=real)
        factors[0] = value
        value = np.multiply.accumulate(factors)[-1]
        done += run
    kept[t] = float(value)
    if len(kept) > POWERS_KEPT:  # the oldest asked (pop, not del: another thread may have)
        kept.pop(list(kept)[0], None)
    return float(value)


class Stateful(Protocol):
    """A network as `take_state` sees it: where an optimiser's state lives."""

    optimizer_name: str | None
    steps: int
    state_steps: int
    flat: dict[str, Any]


def take_state(net: Stateful, chosen: Optimizer) -> None:
    """Before `chosen` steps `net`: where the network's optimiser state (its momentum and
    second-moment buffers and its step counts) is another rule's (SGD's momentum is no moment
    of Adam's, nor the reverse; Adam and AdamW share theirs), it starts from zero, as a new
    torch optimiser's does, with a warning. Then it is `chosen`'s (`Network.optimizer_name`,
    kept in model files). Every path that steps a network calls this first."""
    held = net.optimizer_name
    if held == chosen.kernel:
        return
    if held is not None and getattr(OPTIMIZERS.get(held), "state", None) != chosen.state:
        log.warning("the network's optimiser state is %s's, which %s cannot use: its moments "
                    "and step counts start from zero", held, chosen.kernel)
        for role in ("momentum", "second"):
            net.flat[role].fill(0)
        net.steps = net.state_steps = 0
    net.optimizer_name = chosen.kernel


def optimizer(value: object, dtype: Any) -> Optimizer:
    """`value` if it is an Optimizer whose values `dtype` holds, else TypeError/ValueError."""
    if not isinstance(value, Optimizer):
        raise TypeError(f"expected an optimiser (SGD, LearningParameters, Adam, AdamW), got "
                        f"{value!r}")
    return _checked(value, dtype)


@functools.lru_cache(maxsize=64)
def _checked(value: Optimizer, dtype: Any) -> Optimizer:
    """`value`, once `check` passed (an optimiser is a value: a training loop checks it once,
    not per step)."""
    value.check(dtype)
    return value
