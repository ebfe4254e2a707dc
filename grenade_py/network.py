"""Network: Grenade's typed list of layers with the shapes between them, placed on a device.

A Network is a Series of layers with an input shape and four flat device buffers — parameters,
momentum, second moment and gradients — whose views the layers use, so one launch updates the
whole network. It is itself a layer: a Network inside another (directly, or as a branch of
Concat or Merge) becomes part of the outer network's flat buffers, keeping the values it had.
It is data: whoever runs it (`grenade_py.execution`) owns the batch buffers and launches, and
`grenade_py.network_file` maps it onto model files.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pyopencl as cl
import pyopencl.array as cl_array

from grenade_py import network_file, onnx_export, onnx_import
from grenade_py.device import Device, named_errors
from grenade_py.errors import ShapeError
from grenade_py.layers import INITS, Layer, Series
from grenade_py.network_file import ROLES
from grenade_py.shapes import Shape, check_shape, count

if TYPE_CHECKING:  # typing.Self is Python 3.11's; grenade_py runs on 3.10
    from typing_extensions import Self


class Network(Series):
    """A list of layers checked against the shapes between them, placed on an OpenCL device.

    Parameters:
        layers: the layers, input first. Each layer object belongs to one network; a Network
            among them (or in a branch) is nested, keeping its parameters.
        input: the shape of one input sample, e.g. `D1(2)`.
        device: where the network lives: a Device, a "PLATFORM:DEVICE" string, or None for
            `Device()` (see `grenade_py.device`).
        seed: seeds the initial parameters; None draws fresh ones.
        init: how parameters are drawn (grenade_py.layers.INITS): "scaled" (default, uniform
            +-1/sqrt(fan_in)), "grenade" (uniform +-1), "xavier" or "he"; a layer built with
            an `init` of its own draws as that says.

    Raises ShapeError naming the layer's index (and its path through branches), the layer, the
    shape it takes and the shape it was given, when a layer cannot take its input.

    `net.shapes` is Grenade's shape list: input shape, then every layer's output shape. A batch
    of samples of shape S is an array (N, *S.dims); D3 is channel-major (N, C, H, W).
    """

    def __init__(self, layers: Sequence[Layer], input: Shape,
                 device: Device | str | None = None,
                 seed: int | np.random.SeedSequence | None = None, init: str = "scaled") -> None:
        super().__init__(layers)
        check_shape(input, "input")
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        if device is not None and not isinstance(device, (Device, str)):
            raise TypeError(f"device must be a Device or a 'PLATFORM:DEVICE' string, got "
                            f"{device!r}")
        self.shapes = self.shape_list(input)
        self.check_layers()
        #: What this network's layers hold to say it placed them (see Layer.bind).
        self.token = object()
        #: The flat device buffers by role: "parameters", "momentum", "second", "gradients".
        self.flat: dict[str, cl_array.Array] = {}
        #: Optimiser steps taken (Adam's t): one per minibatch, example or recurrent step.
        self.steps = 0
        #: Updates of a RecurrentNetwork's starting states (their Adam t), one per sequence.
        self.state_steps = 0
        #: The optimiser (sgd, adam, adamw) whose state the momentum and second buffers and
        #: the step counts hold; None before the first step (`optimizers.take_state`).
        self.optimizer_name: str | None = None
        #: What the functions taking only a network (run_net, train, evaluate, fit,
        #: train_sequences, ...) hold between calls: their Steps by batch shape, most recently
        #: used last (`grenade_py.execution.steps`), the markers of the last queued work, and
        #: what is derived from the layers alone and costly to make each call (the Update, fit's
        #: and evaluate's launches and sums, run_net's chunk size and one-sample loop).
        self.held: dict[Any, Any] = {}
        _place(self, device if isinstance(device, Device) else Device(device), seed, init)

    def check_layers(self) -> None:
        """ShapeError if a layer cannot run in this kind of network: a recurrent layer (LSTM,
        BasicRecurrent) needs a RecurrentNetwork."""
        for path, layer, _ in self.nodes(self.shapes[0]):
            if getattr(layer, "recurrent", False):
                raise ShapeError(f"layer {path} ({layer!r}) is recurrent: build a "
                                 "RecurrentNetwork (grenade_py.RecurrentNetwork) for it")

    @property
    def input_shape(self) -> Shape:
        return self.shapes[0]

    @property
    def output_shape(self) -> Shape:
        return self.shapes[-1]

    @property
    def parameter_count(self) -> int:
        """How many values training moves: every layer's parameters, as PyTorch's
        `sum(p.numel() for p in model.parameters())` counts them."""
        return sum(view.size for layer in self.layers for view in layer.parameters.values())

    def out_shape(self, in_shape: Shape) -> Shape:
        if in_shape != self.input_shape:
            raise ShapeError(f"takes {self.input_shape!r}")
        return self.output_shape

    def bind(self, device: Device, in_shape: Shape, owner: object) -> None:
        super().bind(device, in_shape, owner)
        if owner is not self.token:  # its values now live in the outer network's buffers
            self.flat, self.held = {}, {}

    @property
    def nested(self) -> bool:
        """Whether the network is now part of another (whose flat buffers hold its values)."""
        return self._owner is not self.token

    def __repr__(self) -> str:
        layers = ", ".join(repr(layer) for layer in self.layers)
        shapes = ", ".join(repr(shape) for shape in self.shapes)
        return f"Network '[{layers}] '[{shapes}]"

    def spec(self) -> dict[str, Any]:
        return super().spec() | {"input": repr(self.input_shape)}

    def check_runnable(self) -> None:
        """ValueError unless this network runs on its own (it is not nested in another)."""
        if self.nested:
            raise ValueError("this network is part of another network now; run that one")

    # -- copies ------------------------------------------------------------------------------
    def __deepcopy__(self, memo: dict[int, Any]) -> Self:
        """`copy.deepcopy(net)`: an independent network on the same device holding what this
        one holds (parameters, the optimiser's state and step counts, the last backward pass's
        gradients, each layer's state: a Dropout's key and counter, BatchNorm's running
        statistics), so that both train on exactly as this one would; Grenade's networks are
        values, and this keeps one while another trains. A nested network's copy runs on
        its own. Copied on the device: nothing is read back but the layers' state."""
        copied = type(self).from_spec(self.spec(), device=self.device, seed=0)
        queue = self.device.queue
        for ours, theirs in zip(self.layers, copied.layers, strict=True):
            for role in (*ROLES, "gradients"):
                for name, view in getattr(ours, role).items():
                    cl.enqueue_copy(queue, getattr(theirs, role)[name].data, view.data)
        for (_, ours, _), (_, theirs, _) in zip(self.nodes(self.input_shape),
                                                copied.nodes(copied.input_shape), strict=True):
            if state := ours.get_state():
                theirs.set_state(state)
        copied.steps, copied.state_steps = self.steps, self.state_steps
        copied.optimizer_name = self.optimizer_name
        memo[id(self)] = copied
        return copied

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise TypeError(f"a {type(self).__name__} holds device buffers and cannot be pickled "
                        "or shallow-copied: save it with net.save(path), or copy it with "
                        "copy.deepcopy(net)")

    # -- parameters as numpy -----------------------------------------------------------------
    def get_parameters(self) -> list[dict[str, np.ndarray]]:
        """Host copies of every layer's parameters: one dict per layer (empty for activations),
        e.g. `{"weights": (o, i), "bias": (o,)}` for FullyConnected; a composite layer's are
        keyed by path, e.g. `{"a.0.weights": ..., "b.bias": ...}`."""
        return self.host_copies("parameters")

    def host_copies(self, role: str) -> list[dict[str, np.ndarray]]:
        """Host copies of every layer's buffers of `role` (parameters, momentum, second,
        gradients), shaped as get_parameters gives them: cut from one read of the flat buffer
        that holds them all (each read costs a round trip to the device: 20-70 us), or for a
        nested network (whose values the outer network holds) read one by one."""
        flat = self.flat.get(role)
        if flat is None:
            return [{k: v.get() for k, v in getattr(layer, role).items()}
                    for layer in self.layers]
        whole = flat.get()

        def cut(view: cl_array.Array) -> np.ndarray:
            start = view_place(view)[1]
            return whole[start:start + view.size].reshape(view.shape)

        return [{k: cut(v) for k, v in getattr(layer, role).items()} for layer in self.layers]

    def set_parameters(self, parameters: Sequence[dict[str, np.ndarray]]) -> None:
        """Replace every layer's parameters with host arrays shaped as `get_parameters` gives."""
        self._set("parameters", parameters)

    def get_momentum(self) -> list[dict[str, np.ndarray]]:
        """Host copies of every layer's momentum, shaped as `get_parameters`."""
        return self.host_copies("momentum")

    def set_momentum(self, momentum: Sequence[dict[str, np.ndarray]]) -> None:
        """Replace every layer's momentum (zero it to restart descent from rest)."""
        self._set("momentum", momentum)

    def get_second(self) -> list[dict[str, np.ndarray]]:
        """Host copies of every layer's second moment (Adam's; zero under SGD)."""
        return self.host_copies("second")

    def set_second(self, second: Sequence[dict[str, np.ndarray]]) -> None:
        """Replace every layer's second moment."""
        self._set("second", second)

    def _set(self, role: str, values: Sequence[dict[str, np.ndarray]]) -> None:
        if len(values) != len(self.layers):
            raise ValueError(f"expected {role} for {len(self.layers)} layers, got {len(values)}")
        checked = []
        for index, (layer, given) in enumerate(zip(self.layers, values, strict=True)):
            buffers = getattr(layer, role)
            if not isinstance(given, dict) or set(given) != set(buffers):
                raise ValueError(f"layer {index} ({layer!r}) has {role} {sorted(buffers)}, "
                                 f"got {sorted(given) if isinstance(given, dict) else given!r}")
            for name, target in buffers.items():
                array = np.asarray(given[name])
                if array.shape != target.shape:
                    raise ValueError(f"layer {index} ({layer!r}) {name} must have shape "
                                     f"{target.shape}, got {array.shape}")
                if not (np.issubdtype(array.dtype, np.floating)
                        or np.issubdtype(array.dtype, np.integer)):
                    raise ValueError(f"layer {index} ({layer!r}) {name} must be real numbers, "
                                     f"got dtype {array.dtype}")
                with np.errstate(over="ignore"):
                    cast = np.ascontiguousarray(array.astype(self.device.dtype))
                if not np.all(np.isfinite(cast)):
                    raise ValueError(f"layer {index} ({layer!r}) {name} must be finite numbers "
                                     f"in {self.device.precision}")
                checked.append((target, cast))
        # Only once everything is valid: never half-set. Then one wait for all the copies,
        # not a round trip each.
        for target, array in checked:
            target.set(array, async_=True)
        self.device.queue.finish()

    @classmethod
    def from_spec(cls, spec: dict[str, Any], device: Device | str | None = None,
                  seed: int | np.random.SeedSequence | None = None, init: str = "scaled"
                  ) -> Self:
        """The network a specification describes: the JSON-able structure `spec()` gives and
        model files hold, {"type": "Network", "input": "D1 784", "layers": [{"type":
        "FullyConnected", "i": 784, "o": 10}, ...]} (nested networks and branches as they
        nest), built as `Network(layers, input=...)` is, shapes checked the same way.
        Raises ValueError naming the place in the spec for what cannot be built, ShapeError
        for shapes that do not chain."""
        return cast("Self", network_file.from_spec(cls, Network, spec, device, seed, init))

    # -- model files (grenade_py.network_file) -----------------------------------------------
    def save(self, path: str | os.PathLike[str], metadata: dict[str, Any] | None = None,
             optimizer_state: bool = True) -> None:
        """Write the network (structure, shapes, parameters, the optimiser's state and which
        optimiser's it is, each Dropout's key and counter) to `path`, atomically, with
        `metadata` (JSON values, such as a text model's alphabet; `network_file.read_metadata`
        gives it back). Without `optimizer_state` the moments and step counts are left out (a
        third of the size, for a model to run rather than resume: it loads with them zero, as
        a new network's). Raises ModelFileError, writing nothing, if a value is NaN or Inf."""
        network_file.save(self, path, metadata, optimizer_state)

    @classmethod
    def load(cls, path: str | os.PathLike[str], device: Device | str | None = None,
             like: Network | None = None) -> Self:
        """Read a network written by `save`. Arrays are cast to `device`'s precision (default:
        like's device, else a new Device of the file's precision). With `like`, the file must
        hold that network's structure, else ModelFileError says how they differ."""
        if like is not None and not isinstance(like, Network):
            raise TypeError(f"like must be a Network, got {like!r}")
        return cast("Self", network_file.load(cls, Network, path, device, like))

    # -- ONNX (grenade_py.onnx_export, grenade_py.onnx_import) ---------------------------------
    def to_onnx(self, path: str | os.PathLike[str], steps: int | None = None) -> None:
        """Write the network as an ONNX model (opset onnx_export.OPSET) to `path`, atomically,
        checked by onnx.checker, for inference as run_net / run_recurrent compute it: input
        "input" (N, *input dims), output "output". A RecurrentNetwork is unrolled over
        `steps` (its input (N, steps, *in), output (N, steps, *out), and each cell's last
        state as outputs "state0", ...). Needs the onnx package (pip install onnx)."""
        onnx_export.to_onnx(self, path, steps)

    @classmethod
    def from_onnx(cls, path: str | os.PathLike[str], device: Device | str | None = None
                  ) -> Self:
        """The network an ONNX model describes, on `device` (default: a Device of the model's
        precision): one `to_onnx` wrote comes back as it was; another exporter's (PyTorch's)
        must be a chain of ops grenade_py has layers for (onnx_import.FOREIGN_OPS: an MLP, a
        LeNet whose convolutions have no bias...). ModelFileError names the op and node of
        anything it cannot read."""
        return cast("Self", onnx_import.from_onnx(cls, path, device))


def flat_view(flat: cl_array.Array, offset: int, shape: tuple[int, ...]) -> cl_array.Array:
    """A device array over `flat`'s values offset .. offset + size (an aligned sub-buffer, so
    kernels take it as a buffer of its own)."""
    itemsize = flat.dtype.itemsize
    count = int(np.prod(shape))
    base = cast(cl.Buffer, flat.base_data)
    region = base.get_sub_region(offset * itemsize, count * itemsize)
    return cl_array.Array(flat.queue, shape, flat.dtype, data=region)


def view_place(view: cl_array.Array) -> tuple[int, int]:
    """The allocation a flat_view lies in (its int_ptr) and its offset there, in values."""
    region: Any = view.base_data
    parent = region.get_info(cl.mem_info.ASSOCIATED_MEMOBJECT)
    return parent.int_ptr, int(region.get_info(cl.mem_info.OFFSET)) // view.dtype.itemsize


def aligned_offsets(align: int, sizes: Sequence[int]) -> tuple[list[int], int]:
    """Where regions of these sizes (values) lie one after another in one buffer, each from an
    offset that is a multiple of `align` (Device.alignment: so that flat_view can take it), and
    the values they take in all."""
    offsets, total = [], 0
    for size in sizes:
        offsets.append(total)
        total += -(-size // align) * align
    return offsets, total


def pack(total: int, offsets: Sequence[int], arrays: Sequence[np.ndarray], dtype: Any
         ) -> np.ndarray:
    """A host array of `total` values of `dtype` holding each array's values from its offset
    (zero elsewhere): one copy fills the regions aligned_offsets laid out."""
    host = np.zeros(total, dtype)
    for at, array in zip(offsets, arrays, strict=True):
        host[at:at + array.size] = array.ravel()
    return host


def _place(net: Network, device: Device, seed: int | np.random.SeedSequence | None,
           init: str) -> None:
    """Lay out every parameter of `net`'s layers in flat buffers on `device` and bind the
    layers to views of them. Nothing is marked placed unless everything succeeds."""
    nodes = list(net.nodes(net.input_shape))
    nested = {layer.token for _, layer, _ in nodes[1:]
              if isinstance(layer, Network) and not layer.nested}
    seen: set[int] = set()
    for _, layer, _ in nodes:
        if id(layer) in seen:
            raise ValueError(f"{layer!r} appears twice in the network; create a layer for each "
                             "place")
        seen.add(id(layer))
        owner = layer._owner
        if owner is not None and owner is not net.token and owner not in nested:
            raise ValueError(f"{layer!r} already belongs to a network; create a new layer")
    if seed is not None and not isinstance(seed, np.random.SeedSequence):
        seed = count(seed, "seed", 0)
    rng = np.random.default_rng(seed)
    itemsize, align = np.dtype(device.dtype).itemsize, device.alignment
    leaves = [layer for _, layer, in_shape in nodes if not layer.children(in_shape)]
    sizes = [int(np.prod(shape)) for layer in leaves for shape in layer.parameter_shapes().values()]
    device.check_allocation("the network's parameters",
                            max(1, aligned_offsets(align, sizes)[1]) * itemsize)
    arrays = []  # (layer, name, its values by role)
    for layer in leaves:
        layer.draw(rng)
        if not layer.parameter_shapes():
            continue
        if layer._owner is not None:  # inside a nested network: keep what it has
            values = {role: {k: v.get() for k, v in getattr(layer, role).items()}
                      for role in ROLES}
        else:
            fresh = layer.initial_parameters(rng, layer.init or init)
            values = {"parameters": fresh} | {
                role: {k: np.zeros_like(v) for k, v in fresh.items()} for role in ROLES[1:]}
        arrays += [(layer, name, {role: values[role][name] for role in ROLES})
                   for name in values["parameters"]]
    offsets, total = aligned_offsets(align, [by_role["parameters"].size
                                             for _, _, by_role in arrays])
    layout = [(layer, name, offset, by_role["parameters"].shape)
              for (layer, name, by_role), offset in zip(arrays, offsets, strict=True)]
    host = {role: pack(max(total, 1), offsets, [by_role[role] for _, _, by_role in arrays],
                       device.dtype) for role in ROLES}
    with named_errors(f"allocate the network's {total} parameters on {device.name}"):
        flat = {role: device.to_device(host[role]) for role in ROLES}
        flat["gradients"] = device.zeros((max(total, 1),))
        views = [(layer, name, {role: flat_view(flat[role], offset, shape) for role in flat})
                 for layer, name, offset, shape in layout]
    # Everything is allocated: only now bind the layers.
    for layer, _, _, _ in layout:
        for role in flat:
            setattr(layer, role, {})
    for layer, name, by_role in views:
        for role, view in by_role.items():
            getattr(layer, role)[name] = view
    for _, layer, in_shape in nodes:
        layer.bind(device, in_shape, net.token)
    for _, layer, in_shape in reversed(nodes):  # children before their parents
        parts = layer.children(in_shape)
        if parts:
            for role in flat:
                setattr(layer, role, {f"{key}.{name}": value for key, child, _ in parts
                                      for name, value in getattr(child, role).items()})
    net.flat = flat
