"""Network: Grenade's typed list of layers with the shapes between them, placed on a device.

A Network is a Series of layers with an input shape and three flat device buffers — parameters,
momentum and gradients — whose views the layers use, so one launch updates the whole network.
It is itself a layer: a Network inside another (directly, or as a branch of Concat or Merge)
becomes part of the outer network's flat buffers, keeping the values it had. It is data: whoever
runs it (`grenade_py.execution`) owns the batch buffers and launches.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any, Self, cast

import numpy as np
import pyopencl as cl
import pyopencl.array as cl_array

from grenade_py import model_file
from grenade_py.device import Device, named_errors
from grenade_py.errors import ModelFileError, ShapeError
from grenade_py.layers import INITS, LAYER_TYPES, Concat, Layer, Merge, Series
from grenade_py.shapes import Shape, check_shape, parse_shape

#: The flat buffers saved in model files: the parameters and the optimiser's state (momentum or
#: Adam's first moment; Adam's second moment). "gradients" is the fourth flat buffer.
ROLES = ("parameters", "momentum", "second")


class Network(Series):
    """A list of layers checked against the shapes between them, placed on an OpenCL device.

    Parameters:
        layers: the layers, input first. Each layer object belongs to one network; a Network
            among them (or in a branch) is nested, keeping its parameters.
        input: the shape of one input sample, e.g. `D1(2)`.
        device: where the network lives: a Device, a "PLATFORM:DEVICE" string, or None for
            `Device()` (see `grenade_py.device`).
        seed: seeds the initial parameters; None draws fresh ones.
        init: "scaled" (default, uniform +-1/sqrt(fan_in)) or "grenade" (uniform +-1).

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

    def out_shape(self, in_shape: Shape) -> Shape:
        if in_shape != self.input_shape:
            raise ShapeError(f"takes {self.input_shape!r}")
        return self.output_shape

    def bind(self, device: Device, in_shape: Shape, owner: object) -> None:
        super().bind(device, in_shape, owner)
        if owner is not self.token:
            self.flat = {}  # its values now live in the outer network's buffers

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

    # -- parameters as numpy -----------------------------------------------------------------
    def get_parameters(self) -> list[dict[str, np.ndarray]]:
        """Host copies of every layer's parameters: one dict per layer (empty for activations),
        e.g. `{"weights": (o, i), "bias": (o,)}` for FullyConnected; a composite layer's are
        keyed by path, e.g. `{"a.0.weights": ..., "b.bias": ...}`."""
        return [{k: v.get() for k, v in layer.parameters.items()} for layer in self.layers]

    def set_parameters(self, parameters: Sequence[dict[str, np.ndarray]]) -> None:
        """Replace every layer's parameters with host arrays shaped as `get_parameters` gives."""
        self._set("parameters", parameters)

    def get_momentum(self) -> list[dict[str, np.ndarray]]:
        """Host copies of every layer's momentum, shaped as `get_parameters`."""
        return [{k: v.get() for k, v in layer.momentum.items()} for layer in self.layers]

    def set_momentum(self, momentum: Sequence[dict[str, np.ndarray]]) -> None:
        """Replace every layer's momentum (zero it to restart descent from rest)."""
        self._set("momentum", momentum)

    def get_second(self) -> list[dict[str, np.ndarray]]:
        """Host copies of every layer's second moment (Adam's; zero under SGD)."""
        return [{k: v.get() for k, v in layer.second.items()} for layer in self.layers]

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
                    cast = array.astype(self.device.dtype)
                if not np.all(np.isfinite(cast)):
                    raise ValueError(f"layer {index} ({layer!r}) {name} must be finite numbers "
                                     f"in {self.device.precision}")
                checked.append((target, cast))
        for target, array in checked:  # only once everything is valid: never half-set
            target.set(array)

    # -- model files -------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str], metadata: dict[str, Any] | None = None
             ) -> None:
        """Write the network (structure, shapes, parameters and momentum) to `path`,
        atomically, in the format of `grenade_py.model_file`, with `metadata` (JSON values, such
        as a text model's alphabet; `read_metadata` gives it back). Raises ModelFileError,
        writing nothing, if a parameter is NaN or Inf."""
        try:
            json.dumps(metadata or {}, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise ModelFileError(f"metadata must be JSON values (str, finite numbers, lists, "
                                 f"dicts with str keys): {e}; nothing was written to {path}"
                                 ) from None
        arrays = []
        for role, values in zip(ROLES, (self.get_parameters(), self.get_momentum(),
                                        self.get_second()), strict=True):
            for index, layer_values in enumerate(values):
                for name, value in layer_values.items():
                    if not np.all(np.isfinite(value)):
                        raise ModelFileError(
                            f"layer {index} {name} {role} hold NaN or Inf (training diverged?); "
                            f"nothing was written to {path}")
                    arrays.append(({"layer": index, "role": role, "name": name}, value))
        header = {"format": "grenade_py", "precision": self.device.precision,
                  "network": self.spec(), "shapes": [repr(s) for s in self.shapes],
                  "metadata": metadata or {}, "steps": self.steps,
                  "state_steps": self.state_steps,
                  "layer_state": {path: state for path, layer, _ in self.nodes(self.input_shape)
                                  if (state := layer.get_state())}}
        model_file.write(path, header, arrays)

    @classmethod
    def load(cls, path: str | os.PathLike[str], device: Device | str | None = None,
             like: Network | None = None) -> Self:
        """Read a network written by `save`. Arrays are cast to `device`'s precision (default:
        like's device, else a new Device of the file's precision). With `like`, the file must
        hold that network's structure, else ModelFileError says how they differ."""
        if like is not None and not isinstance(like, Network):
            raise TypeError(f"like must be a Network, got {like!r}")
        header, arrays = model_file.read(path)
        try:
            spec = header["network"]
            if header.get("format") != "grenade_py" or spec.get("type") != cls.__name__:
                raise ValueError(f"it holds no grenade_py {cls.__name__}")
            input_shape = parse_shape(spec["input"])
            structure = layer_from_spec(spec)  # nothing on a device yet
            assert isinstance(structure, Series)
            shapes = [repr(s) for s in structure.shape_list(input_shape)]
            if shapes != header["shapes"]:
                raise ValueError(f"stored shapes {header['shapes']} differ from the layers' "
                                 f"{shapes}")
            values = _values(structure, input_shape, arrays)
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:
            raise ModelFileError(f"{path} has a corrupted header ({e})") from None
        if like is not None and like.spec() != spec:
            raise ModelFileError(f"{path} holds another architecture: {structure!r} on "
                                 f"{input_shape!r}, expected {like!r}")
        if device is None:
            device = like.device if like is not None else Device(precision=header["precision"])
        device = device if isinstance(device, Device) else Device(device)
        layers = [layer_from_spec(s, device) for s in spec["layers"]]
        loaded = cls(layers, input=input_shape, device=device, seed=0)
        try:
            loaded.set_parameters(values["parameters"])
            loaded.set_momentum(values["momentum"])
            loaded.set_second(values["second"])
            counts = {name: header.get(name, 0) for name in ("steps", "state_steps")}
            for name, count in counts.items():
                if type(count) is not int or count < 0:
                    raise ValueError(f"{name} is {count!r}, not a count")
            states = header.get("layer_state", {})
            if not isinstance(states, dict):
                raise ValueError("layer_state is not an object")
            for path, layer, _ in loaded.nodes(loaded.input_shape):
                if path in states or layer.get_state():
                    layer.set_state(states.get(path))
            loaded.steps = counts["steps"]
            if counts["state_steps"]:
                loaded.state_steps = counts["state_steps"]
        except ValueError as e:
            raise ModelFileError(f"{path} does not fit this {device.precision} device: {e}"
                                 ) from None
        return loaded


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The metadata a model file was saved with (empty if none)."""
    header, _ = model_file.read(path)
    metadata = header.get("metadata", {})
    if not isinstance(metadata, dict):
        raise ModelFileError(f"{path} has a corrupted header (metadata is not an object)")
    return metadata


def layer_from_spec(spec: dict[str, Any], device: Device | None = None) -> Layer:
    """The unplaced layer a model file's spec describes. A nested network becomes a Network
    placed on `device`, or without a device a Series of the same layers."""
    kind = spec["type"]
    if kind in LAYER_TYPES:
        return LAYER_TYPES[kind].from_spec(**{k: v for k, v in spec.items() if k != "type"})
    if kind in ("Series", "Network", "RecurrentNetwork"):  # the last only at the top
        layers = [layer_from_spec(s, device) for s in spec["layers"]]
        if kind == "Network" and device is not None:
            return Network(layers, input=parse_shape(spec["input"]), device=device, seed=0)
        return Series(layers)
    if kind in ("Concat", "Merge"):
        a, b = layer_from_spec(spec["a"], device), layer_from_spec(spec["b"], device)
        return Concat(a, b, stacked=spec["stacked"]) if kind == "Concat" else Merge(a, b)
    raise ValueError(f"unknown layer type {kind!r}")


def _values(net: Series, input_shape: Shape, arrays: list[tuple[dict[str, Any], np.ndarray]]
            ) -> dict[str, list[dict[str, np.ndarray]]]:
    """The file's arrays as get_parameters/get_momentum lists for `net`, checked against the
    shapes its layers need, before anything is allocated on a device."""
    expected = [_parameter_shapes(layer, shape) for _, layer, shape in net.children(input_shape)]
    values: dict[str, list[dict[str, np.ndarray]]] = {r: [{} for _ in expected] for r in ROLES}
    for meta, value in arrays:
        index, role, name = meta["layer"], meta["role"], meta["name"]
        if role not in ROLES or type(index) is not int or not 0 <= index < len(expected):
            raise ValueError(f"array {meta} belongs to no layer")
        if expected[index].get(name) != value.shape or name in values[role][index]:
            raise ValueError(f"layer {index} has no {role} {name!r} of shape {value.shape}")
        values[role][index][name] = value
    for role in ROLES:
        for index, shapes in enumerate(expected):
            if role == "second" and not values[role][index]:  # files from before Adam
                values[role][index] = {k: np.zeros(s) for k, s in shapes.items()}
            if set(values[role][index]) != set(shapes):
                raise ValueError(f"layer {index} {role} missing")
    return values


def _parameter_shapes(layer: Layer, in_shape: Shape) -> dict[str, tuple[int, ...]]:
    """Every parameter of `layer` (a composite's keyed by path) with its shape."""
    shapes = {}
    for path, node, _ in layer.nodes(in_shape):
        for name, shape in node.parameter_shapes().items():
            shapes[f"{path}.{name}" if path else name] = shape
    return shapes


def flat_view(flat: cl_array.Array, offset: int, shape: tuple[int, ...]) -> cl_array.Array:
    """A device array over `flat`'s values offset .. offset + size (an aligned sub-buffer, so
    kernels take it as a buffer of its own)."""
    itemsize = flat.dtype.itemsize
    count = int(np.prod(shape))
    base = cast(cl.Buffer, flat.base_data)
    region = base.get_sub_region(offset * itemsize, count * itemsize)
    return cl_array.Array(flat.queue, shape, flat.dtype, data=region)


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
    rng = np.random.default_rng(seed)
    itemsize = np.dtype(device.dtype).itemsize
    align = max(1, device.cl_device.mem_base_addr_align // 8 // itemsize)
    leaves = [layer for _, layer, in_shape in nodes if not layer.children(in_shape)]
    sizes = [int(np.prod(shape)) for layer in leaves for shape in layer.parameter_shapes().values()]
    device.check_allocation("the network's parameters",
                            max(1, sum(-(-n // align) * align for n in sizes)) * itemsize)
    layout, chunks, total = [], [], 0  # layout: (layer, name, offset, shape)
    for layer in leaves:
        layer.draw(rng)
        if not layer.parameter_shapes():
            continue
        if layer._owner is not None:  # inside a nested network: keep what it has
            values = {role: {k: v.get() for k, v in getattr(layer, role).items()}
                      for role in ROLES}
        else:
            fresh = layer.initial_parameters(rng, init)
            values = {"parameters": fresh} | {
                role: {k: np.zeros_like(v) for k, v in fresh.items()} for role in ROLES[1:]}
        for name, value in values["parameters"].items():
            layout.append((layer, name, total, value.shape))
            chunks.append((total, {role: values[role][name] for role in ROLES}))
            total += -(-value.size // align) * align
    host = {role: np.zeros(max(total, 1), device.dtype) for role in ROLES}
    for offset, by_role in chunks:
        for role, value in by_role.items():
            host[role][offset:offset + value.size] = np.ravel(value)
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
