"""Checking what users give the runners: samples of the network's shapes, pairs of inputs and
targets, counts, and sequences with their masks. Each check raises ValueError in one line that
says what was wrong and what was expected."""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from grenade_py.losses import Loss
from grenade_py.shapes import Shape, count

if TYPE_CHECKING:
    import pyopencl.array as cl_array

    from grenade_py.device import Device
    from grenade_py.network import Network
    from grenade_py.recurrent_network import RecurrentNetwork


#: How to put networks on one device, for the errors where they are on several.
ONE_DEVICE = ("(each Network built without device= makes its own Device): build them with "
              "one, dev = Device(); Network(..., device=dev)")


#: The dtype kinds of real numbers (numpy's `dtype.kind`): floats, signed and unsigned ints.
REAL_KINDS = "fiu"


def array_of(value: object, what: str) -> np.ndarray:
    """np.asarray(value); ValueError naming `what` where numpy cannot make one array of it (a
    ragged list, say)."""
    try:
        return np.asarray(value)
    except ValueError as e:
        raise ValueError(f"{what} is not one array of numbers: {e}") from None


def samples(x: object, shape: Shape, what: str, dtype: type, steps: int = 0,
            output: bool = False) -> tuple[np.ndarray, bool]:
    """`x` as a contiguous (N, *shape) array of `dtype`, and whether it was one sample. With
    `steps`, the samples are sequences' steps, b * steps + t, and errors name them so. `what`
    names the argument in errors; `output`: it is shaped as the network's output (targets, a
    delta), not its input."""
    array = array_of(x, what)
    dims = shape.dims
    if array.dtype.kind not in REAL_KINDS:
        raise ValueError(f"{what} must be real numbers, got dtype {array.dtype}")
    single = array.shape == dims
    if single:
        array = array[None]
    if array.shape[1:] != dims or array.shape[0] < 1:
        verb = "outputs" if output else "takes"
        raise ValueError(
            f"{what} has shape {array.shape}, but the network {verb} {shape!r}: pass one sample "
            f"of shape {dims} or a batch of shape (N, {', '.join(map(str, dims))}) with N >= 1"
            + (labels_hint(array, shape) if output else ""))
    if array.dtype == dtype:
        cast: np.ndarray = np.ascontiguousarray(array)
    else:
        with np.errstate(over="ignore"):  # a value past the precision's range: Inf, refused
            cast = np.ascontiguousarray(array, dtype=dtype)
    if not np.isfinite(cast).all():
        bad = int(np.argwhere(~np.isfinite(cast.reshape(len(cast), -1)))[0][0])
        place = f"sequence {bad // steps}, step {bad % steps}" if steps else f"sample {bad}"
        raise ValueError(f"{what} holds NaN or Inf in {np.dtype(dtype).name} (first in {place})")
    return cast, single


def labels_hint(y: np.ndarray, shape: Shape) -> str:
    """What to say of targets `y` that look like class labels (1-D integers) for an output of
    several values: pass one-hot rows, as PyTorch's class-index targets are not taken."""
    if y.ndim == 1 and len(shape.dims) == 1 and shape.dims[0] > 1 and \
            np.issubdtype(y.dtype, np.integer):
        return f" (class labels as one-hot rows: np.eye({shape.dims[0]})[labels])"
    return ""


def device_samples(x: cl_array.Array, shape: Shape, what: str, device: Device) -> int:
    """The samples in device array `x` (N, *shape) of device's precision, on that device (the
    twin of `samples` for data already there, whose values are not checked); ValueError for
    another array."""
    dims = shape.dims
    same_device([x], device, what)
    if x.dtype != device.dtype or x.shape[1:] != dims or \
            len(x.shape) != 1 + len(dims) or x.shape[0] < 1 or not x.flags.c_contiguous:
        raise ValueError(f"{what} is a device array {x.dtype} {x.shape}; the network takes a "
                         f"contiguous (N, {', '.join(map(str, dims))}) array of "
                         f"{device.precision}")
    return int(x.shape[0])


def examples(net: Network, x: object, y: object, loss: Loss, names: str = "x y"
             ) -> tuple[np.ndarray, np.ndarray]:
    """Inputs x (N, *in) and targets y (N, *out) for `net` (one sample each also), as arrays of
    its precision, N alike, y targets `loss` can use. `names`: what errors call them."""
    x_name, y_name = names.split()
    xs, _ = samples(x, net.input_shape, x_name, net.device.dtype)
    ys, _ = samples(y, net.output_shape, y_name, net.device.dtype, output=True)
    if len(xs) != len(ys):
        raise ValueError(f"{x_name} has {len(xs)} samples but {y_name} has {len(ys)}"
                         + labels_hint(np.asarray(y), net.output_shape))
    loss.check_targets(ys, y_name)
    return xs, ys


def sequences(net: RecurrentNetwork, x: object, targets: object, mask: object
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x (B, T, *in), targets (B, T, *out) and mask (B, T) checked, time-major: (T, B, ...).
    The targets of steps without a mark are ignored, whatever they hold (NaN too), and given
    as 0."""
    dtype = net.device.dtype
    given = array_of(targets, "targets")
    xs = _sequence_inputs(net, x)
    _sequence_shape("targets", given, net.output_shape)
    steps, batch = xs.shape[:2]
    if given.shape[:2] != (batch, steps):
        raise ValueError(f"targets have shape {given.shape}, but x has {batch} sequences of "
                         f"{steps} steps")
    marks = array_of(mask, "mask")
    if marks.shape != (batch, steps) or marks.dtype != bool:
        raise ValueError(f"mask must be a bool array ({batch}, {steps}) marking the steps with a "
                         f"target, got {marks.dtype} {marks.shape}")
    if not marks.all() and np.issubdtype(given.dtype, np.floating):
        given = np.where(marks.reshape(batch, steps, *[1] * (given.ndim - 2)), given, 0)
    ts, _ = samples(given.reshape(-1, *given.shape[2:]), net.output_shape, "targets", dtype,
                    steps, output=True)
    return xs, _time_major(ts, batch, steps), _time_major(marks.reshape(-1).astype(dtype),
                                                          batch, steps)


def _sequence_shape(what: str, array: np.ndarray, shape: Shape) -> None:
    """ValueError unless `array` is B >= 1 sequences of T >= 1 steps of `shape`."""
    if array.shape[2:] != shape.dims or 0 in array.shape[:2]:
        raise ValueError(f"{what} has shape {array.shape}: pass B >= 1 sequences of T >= 1 "
                         f"steps, (B, T, {', '.join(map(str, shape.dims))}) for {shape!r}")


def _sequence_inputs(net: RecurrentNetwork, x: object) -> np.ndarray:
    """x (B, T, *in) checked, time-major (T, B, *in) in the network's precision."""
    xs = array_of(x, "x")
    _sequence_shape("x", xs, net.input_shape)
    batch, steps = xs.shape[:2]
    flat, _ = samples(xs.reshape(batch * steps, *xs.shape[2:]), net.input_shape, "x",
                      net.device.dtype, steps)
    return _time_major(flat, batch, steps)


def _time_major(rows: np.ndarray, batch: int, steps: int) -> np.ndarray:
    """Rows b * steps + t as a contiguous (steps, batch, ...) array."""
    return np.ascontiguousarray(np.swapaxes(rows.reshape(batch, steps, *rows.shape[1:]), 0, 1))


def recurrent_steps(net: RecurrentNetwork, examples: Sequence[Any]
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grenade's sequence of (input, target or None) steps as x (1, T, *in), targets
    (1, T, *out), 0 where None, and the mask (1, T) of the steps with one; ValueError naming a
    step that is not such a pair."""
    if not examples:
        raise ValueError("a sequence needs at least one step")
    for i, step in enumerate(examples):
        if not isinstance(step, (tuple, list)) or len(step) != 2:
            raise ValueError(f"step {i} is {step!r:.60}: each step is a pair (input, target or "
                             "None)")
        checks = [("input", step[0], net.input_shape, "takes")] + (
            [] if step[1] is None else [("target", step[1], net.output_shape, "outputs")])
        for what, value, wanted, verb in checks:
            if np.shape(value) != wanted.dims:
                raise ValueError(f"step {i}'s {what} has shape {np.shape(value)}, but the "
                                 f"network {verb} {wanted!r}: give it shape {wanted.dims}")
    xs = np.stack([np.asarray(x) for x, _ in examples])
    ts = np.stack([np.zeros(net.output_shape.dims) if t is None else np.asarray(t)
                   for _, t in examples])
    return xs[None], ts[None], np.array([[t is not None for _, t in examples]])


def run_sequences(net: RecurrentNetwork, x: object) -> tuple[np.ndarray, bool]:
    """One sequence (T, *in) or B of them (B, T, *in), checked, as a time-major (T, B, *in)
    array of the network's precision; and whether it was one."""
    xs = array_of(x, "x")
    dims = net.input_shape.dims
    if xs.ndim not in (len(dims) + 1, len(dims) + 2):
        each = ", ".join(map(str, dims))
        raise ValueError(f"x has shape {xs.shape}: pass one sequence of T steps (T, {each}) or "
                         f"B sequences (B, T, {each}) for {net.input_shape!r}")
    single = xs.ndim == 1 + len(dims)
    if single:
        xs = xs[None]
    count(xs.shape[1], "the number of steps", 1)
    return _sequence_inputs(net, xs), single


def states(net: RecurrentNetwork, given: Sequence[cl_array.Array], batch: int,
           cells: Sequence[tuple[str, Any]]) -> None:
    """ValueError unless `given` are the states of the network's `cells` (its
    recurrent_layers()) for `batch` sequences, on its device."""
    wanted = [(batch, cell.state_size) for _, cell in cells]
    if [s.shape for s in given] != wanted:
        raise ValueError(f"state holds {[s.shape for s in given]}, but {batch} sequences need "
                         f"{wanted}")
    same_device(given, net.device, "state")


def same_device(arrays: Sequence[cl_array.Array], device: Device, what: str) -> None:
    """ValueError unless every one of these device arrays is on `device`."""
    if any(a.context != device.context for a in arrays):
        raise ValueError(f"another Device object holds {what}, not the network's {ONE_DEVICE}")


def lengths(value: object, batch: int, steps: int) -> np.ndarray:
    """The steps of each of `batch` sequences of up to `steps` (default: all `steps`), as
    int32 (batch,); ValueError unless each is an int in [1, steps]."""
    if value is None:
        return np.full(batch, steps, np.int32)
    given = np.asarray(value)
    if given.shape != (batch,) or not np.issubdtype(given.dtype, np.integer) or (
            batch and (given.min() < 1 or given.max() > steps)):
        raise ValueError(f"lengths must be {batch} ints in [1, {steps}] (each sequence's steps), "
                         f"got {given.dtype} {given.shape}")
    return given.astype(np.int32)
