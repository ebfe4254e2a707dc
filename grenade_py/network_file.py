"""How a network maps onto a model file (`grenade_py.model_file`, the bytes): the header a
network is saved with, and reading it back into layers and checked values.

The header holds the format, the precision, the network's nested structure (`spec`) with its
input shape, the shape list, the optimiser's step counts, what layers keep besides parameters
(`layer_state`: a Dropout's key and step counter) and the caller's metadata; each array says
its layer, role (parameters, momentum, second) and name. Everything is checked against the
layers the structure describes before anything is placed on a device. It does not import the
network module: `Network.save`/`load`/`from_spec` call it with the network classes to build.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from grenade_py import model_file
from grenade_py.device import Device
from grenade_py.errors import ModelFileError
from grenade_py.layers import LAYER_TYPES, Concat, ConcatRecurrent, Layer, Merge, Series
from grenade_py.optimizers import OPTIMIZERS
from grenade_py.shapes import Shape, parse_shape

#: The flat buffers saved in model files: the parameters and the optimiser's state (momentum or
#: Adam's first moment; Adam's second moment). "gradients" is the fourth flat buffer.
ROLES = ("parameters", "momentum", "second")

#: What builds a nested network from its layers and input shape (on the loader's device).
NetworkMaker = Callable[[list[Layer], Shape], Layer]


def save(net: Any, path: str | os.PathLike[str], metadata: dict[str, Any] | None,
         optimizer_state: bool = True) -> None:
    """Write the Network `net` to `path` (see `Network.save`)."""
    try:
        if not isinstance(metadata or {}, dict):
            raise TypeError(f"got {type(metadata).__name__}, not a dict")
        json.dumps(metadata or {}, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ModelFileError(f"metadata must be a dict of JSON values (str, finite numbers, "
                             f"lists, dicts with str keys): {e}; nothing was written to {path}"
                             ) from None
    arrays = []
    getters = (net.get_parameters, net.get_momentum, net.get_second)
    for role, get in zip(ROLES if optimizer_state else ROLES[:1], getters, strict=False):
        for index, layer_values in enumerate(get()):
            for name, value in layer_values.items():
                if not np.all(np.isfinite(value)):
                    raise ModelFileError(f"layer {index} {name} {role} hold NaN or Inf (training "
                                         f"diverged?); nothing was written to {path}")
                arrays.append(({"layer": index, "role": role, "name": name}, value))
    header = {"format": "grenade_py", "precision": net.device.precision,
              "network": net.spec(), "shapes": [repr(s) for s in net.shapes],
              "metadata": metadata or {}, "optimizer_state": optimizer_state,
              **({"steps": net.steps, "state_steps": net.state_steps,
                  "optimizer": net.optimizer_name} if optimizer_state else {}),
              "layer_state": {node: state for node, layer, _ in net.nodes(net.input_shape)
                              if (state := layer.get_state())}}
    model_file.write(path, header, arrays)


@dataclass
class Stored:
    """A model file's network, read and checked: its spec, the unplaced structure and input
    shape, the values by role (as get_parameters gives them), the step counts, the layers'
    state by path, the precision it was saved in, and the optimiser whose state it holds."""

    spec: dict[str, Any]
    structure: Series
    input_shape: Shape
    values: dict[str, list[dict[str, np.ndarray]]]
    steps: int
    state_steps: int
    layer_state: dict[str, Any]
    precision: str
    optimizer: str | None


def read(path: str | os.PathLike[str], kind: str) -> Stored:
    """The network of type `kind` ("Network", "RecurrentNetwork") that `path` holds, checked;
    ModelFileError for anything that does not fit."""
    header, arrays = model_file.read(path)
    other = {"Network": "RecurrentNetwork", "RecurrentNetwork": "Network"}[kind]
    try:
        spec = header["network"]
        if header.get("format") == "grenade_py" and spec.get("type") == other:
            raise ModelFileError(f"{path} holds a {other}: read it with {other}.load")
        if header.get("format") != "grenade_py" or spec.get("type") != kind:
            raise ValueError(f"it holds no grenade_py {kind}")
        input_shape = parse_shape(spec["input"])
        structure = layer_from_spec(spec)  # nothing on a device yet
        assert isinstance(structure, Series)
        shapes = [repr(s) for s in structure.shape_list(input_shape)]
        if shapes != header["shapes"]:
            raise ValueError(f"stored shapes {header['shapes']} differ from the layers' {shapes}")
        optional = ROLES[1:] if header.get("optimizer_state") is False else ("second",)
        values = _values(structure, input_shape, arrays, optional)
        counts = [header.get(name, 0) for name in ("steps", "state_steps")]
        if not all(type(count) is int and count >= 0 for count in counts):
            raise ValueError(f"step counts {counts} are not counts")
        layer_state = header.get("layer_state", {})
        if not isinstance(layer_state, dict):
            raise ValueError("layer_state is not an object")
        optimizer = header.get("optimizer")
        if optimizer is not None and optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer {optimizer!r} is none of {sorted(OPTIMIZERS)}")
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:
        raise ModelFileError(f"{path} has a corrupted header ({e})") from None
    return Stored(spec, structure, input_shape, values, counts[0], counts[1], layer_state,
                  header["precision"], optimizer)


def read_optimizer(path: str | os.PathLike[str]) -> str | None:
    """The optimiser (sgd, adam, adamw) whose state a model file holds; None where it holds
    none (saved without it, before a step, or by a grenade_py that did not say)."""
    header, _ = model_file.read(path)
    name = header.get("optimizer")
    return name if isinstance(name, str) else None


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The metadata a model file was saved with (empty if none)."""
    header, _ = model_file.read(path)
    metadata = header.get("metadata", {})
    if not isinstance(metadata, dict):
        raise ModelFileError(f"{path} has a corrupted header (metadata is not an object)")
    return metadata


def layer_from_spec(spec: dict[str, Any], make_network: NetworkMaker | None = None,
                    path: str = "network") -> Layer:
    """The unplaced layer a spec describes (the structure `Layer.spec` gives: {"type": name,
    its arguments...}; networks and Series {"layers": [...]} and a network its "input",
    Concat, Merge and ConcatRecurrent {"a": ..., "b": ...}). A nested network becomes
    `make_network(layers, input shape)`, or without it a Series of the same layers.
    ValueError naming the place (`path`, e.g. network.layers[2].a) for anything it cannot
    build."""
    if not isinstance(spec, dict) or not isinstance(spec.get("type"), str):
        raise ValueError(f"{path}: a layer is an object with a \"type\", got {spec!r:.80}")
    kind = spec["type"]
    arguments = {k: v for k, v in spec.items() if k != "type"}
    if kind in LAYER_TYPES:
        try:
            return LAYER_TYPES[kind].from_arguments(**arguments)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path} ({kind}): {e}") from None
    if kind in ("Series", "Network", "RecurrentNetwork"):  # the last only at the top
        if not isinstance(spec.get("layers"), list):
            raise ValueError(f"{path} ({kind}): needs \"layers\", a list")
        layers = [layer_from_spec(s, make_network, f"{path}.layers[{k}]")
                  for k, s in enumerate(spec["layers"])]
        if kind != "Network":
            return Series(layers)
        try:  # checked even when only the structure is wanted (a model file's header)
            input_shape = parse_shape(spec["input"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{path} (Network): needs an \"input\" shape such as "
                             f"\"D1 784\", got {spec.get('input')!r}") from None
        return Series(layers) if make_network is None else make_network(layers, input_shape)
    if kind in ("Concat", "Merge", "ConcatRecurrent"):
        if not all(key in spec for key in ("a", "b")):
            raise ValueError(f"{path} ({kind}): needs branches \"a\" and \"b\"")
        a, b = (layer_from_spec(spec[key], make_network, f"{path}.{key}") for key in ("a", "b"))
        if kind != "Concat":
            try:
                return Merge(a, b) if kind == "Merge" else ConcatRecurrent(a, b)
            except ValueError as e:
                raise ValueError(f"{path} ({kind}): {e}") from None
        return Concat(a, b, stacked=bool(spec.get("stacked", False)))
    known = sorted([*LAYER_TYPES, "Concat", "ConcatRecurrent", "Merge", "Network"])
    raise ValueError(f"{path}: unknown layer type {kind!r} (known: {', '.join(known)})")


def _values(net: Series, input_shape: Shape, arrays: list[tuple[dict[str, Any], np.ndarray]],
            optional: tuple[str, ...]) -> dict[str, list[dict[str, np.ndarray]]]:
    """The file's arrays as get_parameters/get_momentum lists for `net`, checked against the
    shapes its layers need, before anything is allocated on a device; the `optional` roles
    (a file from before Adam has no second moment; one saved without its optimiser's state,
    neither moment) are zero where absent."""
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
            if role in optional and not values[role][index]:
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


def from_spec(cls: Any, network: Any, spec: dict[str, Any], device: Device | str | None,
              seed: int | np.random.SeedSequence | None, init: str) -> Any:
    """The network of type `cls` (Network or a subclass) a specification describes, nested
    networks built as `network` (see `Network.from_spec`)."""
    if not isinstance(spec, dict) or spec.get("type") != cls.__name__:
        raise ValueError(f"a {cls.__name__} spec is an object with \"type\": "
                         f"\"{cls.__name__}\", got {spec!r:.80}")
    placed = device if isinstance(device, Device) else Device(device)

    def nested(layers: list[Layer], input_shape: Shape) -> Any:
        return network(layers, input=input_shape, device=placed, seed=seed, init=init)

    structure = layer_from_spec(spec | {"type": "Series"}, nested)
    assert isinstance(structure, Series)
    try:
        input_shape = parse_shape(spec["input"])
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"network: needs an \"input\" shape such as \"D1 784\", got "
                         f"{spec.get('input')!r}") from None
    return cls(structure.layers, input=input_shape, device=placed, seed=seed, init=init)


def load(cls: Any, network: Any, path: str | os.PathLike[str], device: Device | str | None,
         like: Any) -> Any:
    """The network of type `cls` a model file holds, nested networks built as `network` (see
    `Network.load`)."""
    stored = read(path, cls.__name__)
    if like is not None and like.spec() != stored.spec:
        raise ModelFileError(f"{path} holds another architecture: {stored.structure!r} on "
                             f"{stored.input_shape!r}, expected {like!r}")
    if device is None:
        device = like.device if like is not None else Device(precision=stored.precision)
    device = device if isinstance(device, Device) else Device(device)

    def nested(layers: list[Layer], input_shape: Shape) -> Any:
        return network(layers, input=input_shape, device=device, seed=0)

    layers = [layer_from_spec(s, nested, f"network.layers[{k}]")
              for k, s in enumerate(stored.spec["layers"])]
    loaded = cls(layers, input=stored.input_shape, device=device, seed=0)
    try:
        loaded.set_parameters(stored.values["parameters"])
        loaded.set_momentum(stored.values["momentum"])
        loaded.set_second(stored.values["second"])
        for node_path, layer, _ in loaded.nodes(loaded.input_shape):
            if node_path in stored.layer_state or layer.get_state():
                layer.set_state(stored.layer_state.get(node_path))
    except ValueError as e:
        raise ModelFileError(f"{path} does not fit this {device.precision} device: {e}"
                             ) from None
    loaded.steps, loaded.state_steps = stored.steps, stored.state_steps
    loaded.optimizer_name = stored.optimizer
    return loaded
