"""Grenade's own model files: read and write what Grenade's `--save` writes, for the networks
both build (feed-forward layers with FullyConnected, Convolution, Deconvolution parameters).

Grenade writes `runPut (put network)` with cereal: each layer in order, a layer without
parameters writing nothing, Concat and Merge their branch a then b, a nested Network its layers.
Each array is cereal's `putListOf put`: an 8-byte big-endian count, then that many big-endian
float64 values. FullyConnected writes its bias, then its weights row-major (o, i); Convolution
and Deconvolution their K row-major — the layouts grenade_py uses. There is no header: the
architecture comes from a grenade_py network given as `like`. Grenade does not store momentum,
so a loaded network's momentum is zero.
"""
from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

from grenade_py.errors import ModelFileError
from grenade_py.layers import Layer
from grenade_py.model_file import write_atomically
from grenade_py.network import Network
from grenade_py.network_file import layer_from_spec

#: The order in which Grenade writes each layer type's arrays.
ORDER = {"FullyConnected": ("bias", "weights"), "Convolution": ("kernel",),
         "Deconvolution": ("kernel",)}


def _layers_with_parameters(net: Network) -> list[Layer]:
    """The layers that write arrays, in the order Grenade writes them."""
    found = []
    for _, layer, in_shape in net.nodes(net.input_shape):
        if layer.children(in_shape) or not layer.parameter_shapes():
            continue
        if type(layer).__name__ not in ORDER:
            raise ModelFileError(f"{layer!r} has no Grenade file form this grenade_py knows")
        found.append(layer)
    return found


def save_grenade(net: Network, path: str | os.PathLike[str]) -> None:
    """Write `net`'s parameters as Grenade's `--save` would, atomically."""
    chunks = []
    for layer in _layers_with_parameters(net):
        for name in ORDER[type(layer).__name__]:
            values = layer.parameters[name].get().astype(">f8").ravel()
            chunks += [struct.pack(">Q", values.size), values.tobytes()]
    write_atomically(path, b"".join(chunks))


def load_grenade(path: str | os.PathLike[str], like: Network) -> Network:
    """A network of `like`'s structure, on its device, with the parameters of the Grenade
    model file at `path`. ModelFileError if the file does not hold exactly those arrays."""
    if type(like) is not Network:
        raise TypeError(f"load_grenade reads Grenade files of feed-forward networks: like must "
                        f"be a Network, got {type(like).__name__}")
    path = Path(path)
    # like's arrays say the file's size exactly: checked before reading (a sparse or endless
    # file is refused without being read).
    expected_bytes = sum(8 + 8 * int(np.prod(layer.parameter_shapes()[name]))
                         for layer in _layers_with_parameters(like)
                         for name in ORDER[type(layer).__name__])
    try:
        found = path.stat().st_size
        if not path.is_file():
            raise ModelFileError(f"{path} is not a regular file")
        if found != expected_bytes:
            raise ModelFileError(f"{path} is not a Grenade file of {like!r}: it has {found} "
                                 f"bytes, where that network's parameters take "
                                 f"{expected_bytes}")
        blob = path.read_bytes()
    except OSError as e:
        raise ModelFileError(f"cannot read {path}: {e.strerror or e}") from None
    net = layer_from_spec(like.spec(), lambda layers, shape: Network(
        layers, input=shape, device=like.device, seed=0))
    assert isinstance(net, Network)
    at, values = 0, []
    for layer in _layers_with_parameters(net):
        layer_values = {}
        for name in ORDER[type(layer).__name__]:
            shape = layer.parameter_shapes()[name]
            expected = int(np.prod(shape))
            if at + 8 > len(blob) or struct.unpack(">Q", blob[at:at + 8])[0] != expected:
                raise ModelFileError(f"{path} is not a Grenade file of {like!r}: {layer!r} "
                                     f"{name} should hold {expected} values here")
            at += 8
            if at + 8 * expected > len(blob):
                raise ModelFileError(f"{path} is truncated in {layer!r} {name}")
            layer_values[name] = np.frombuffer(blob, ">f8", expected, at).reshape(shape)
            at += 8 * expected
        values.append((layer, layer_values))
    if at != len(blob):
        raise ModelFileError(f"{path} has {len(blob) - at} bytes more than {like!r} holds")
    for layer, layer_values in values:
        for name, value in layer_values.items():
            if not np.all(np.isfinite(value.astype(net.device.dtype))):
                raise ModelFileError(f"{path}: {layer!r} {name} is not finite in "
                                     f"{net.device.precision}")
            layer.parameters[name].set(value.astype(net.device.dtype))
    return net
