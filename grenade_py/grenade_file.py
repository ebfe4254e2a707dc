"""Grenade's own model files: read and write what Grenade's `--save` writes, for the networks
both build (FullyConnected, Convolution, Deconvolution and LSTM parameters, any layers without
parameters, branches, nested networks and ConcatRecurrent).

Grenade writes `runPut (put network)` with cereal: each layer in order, a layer without
parameters writing nothing, Concat, Merge and ConcatRecurrent their branch a then b, a nested
Network its layers. Each array is cereal's `putListOf put`: an 8-byte big-endian count, then that
many big-endian float64 values, matrices row-major. FullyConnected writes its bias, then its
weights (o, i); Convolution and Deconvolution their K (the layouts grenade_py uses); LSTM its
eleven arrays W_f, U_f, b_f, W_i, U_i, b_i, W_o, U_o, b_o, W_c, b_c (each W (o, i), U (o, o)),
which grenade_py keeps stacked and transposed (see LSTM). Grenade's shakespeare.hs then writes the
recurrent inputs (`put bestInput`): each cell's starting state in order, which a recurrent
network's file may hold or not. BasicRecurrent has no Serialize instance in Grenade. There is no
header: the architecture comes from a grenade_py network given as `like`. Grenade does not store
momentum, so a loaded network's momentum is zero.
"""
from __future__ import annotations

import os
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np

from grenade_py.errors import ModelFileError
from grenade_py.layers import Layer
from grenade_py.model_file import write_atomically
from grenade_py.network import Network
from grenade_py.recurrent_network import RecurrentNetwork

Arrays = dict[str, np.ndarray]


def _lstm_to_grenade(p: Arrays) -> list[np.ndarray]:
    o = p["b"].size // 4
    w, u, b = p["w"], p["u"], p["b"]
    gate = [slice(k * o, (k + 1) * o) for k in range(4)]
    return [a for k in range(3) for a in (w[:, gate[k]].T, u[:, gate[k]].T, b[gate[k]])] + [
        w[:, gate[3]].T, b[gate[3]]]


def _lstm_from_grenade(a: list[np.ndarray]) -> Arrays:
    wf, uf, bf, wi, ui, bi, wo, uo, bo, wc, bc = a
    return {"w": np.concatenate([wf, wi, wo, wc]).T, "u": np.concatenate([uf, ui, uo]).T,
            "b": np.concatenate([bf, bi, bo, bc])}


#: Per layer type: (its arrays in Grenade's order from its parameters, the inverse).
FORMS: dict[str, tuple[Callable[[Arrays], list[np.ndarray]],
                       Callable[[list[np.ndarray]], Arrays]]] = {
    "FullyConnected": (lambda p: [p["bias"], p["weights"]],
                       lambda a: {"bias": a[0], "weights": a[1]}),
    "Convolution": (lambda p: [p["kernel"]], lambda a: {"kernel": a[0]}),
    "Deconvolution": (lambda p: [p["kernel"]], lambda a: {"kernel": a[0]}),
    "LSTM": (_lstm_to_grenade, _lstm_from_grenade),
}


def _layers_with_parameters(net: Network) -> list[Layer]:
    """The layers that write arrays, in the order Grenade writes them."""
    found = []
    for _, layer, in_shape in net.nodes(net.input_shape):
        if layer.children(in_shape) or not layer.parameter_shapes():
            continue
        if type(layer).__name__ not in FORMS:
            raise ModelFileError(f"{layer!r} has no Grenade file form this grenade_py knows")
        found.append(layer)
    return found


def _grenade_arrays(net: Network, read: bool = True) -> list[tuple[Layer | None, np.ndarray]]:
    """Every array Grenade writes for `net`, in order, with its layer (None for a starting
    state: those come last); without `read`, zeros of their shapes (nothing read from the
    device, nothing allocated)."""
    def values(layer: Layer) -> dict[str, np.ndarray]:
        if read:
            return {k: v.get() for k, v in layer.parameters.items()}
        return {k: np.broadcast_to(0.0, s) for k, s in layer.parameter_shapes().items()}

    arrays: list[tuple[Layer | None, np.ndarray]] = []
    for layer in _layers_with_parameters(net):
        arrays += [(layer, a) for a in FORMS[type(layer).__name__][0](values(layer))]
    if isinstance(net, RecurrentNetwork):
        arrays += [(None, values(cell)["state"]) for _, cell in net.recurrent_layers()]
    return arrays


def save_grenade(net: Network, path: str | os.PathLike[str]) -> None:
    """Write `net`'s parameters as Grenade's `--save` would (a RecurrentNetwork's starting
    states after them, as shakespeare.hs writes), atomically."""
    chunks = []
    for _, array in _grenade_arrays(net):
        values = np.ascontiguousarray(array).astype(">f8").ravel()
        chunks += [struct.pack(">Q", values.size), values.tobytes()]
    write_atomically(path, b"".join(chunks))


def load_grenade(path: str | os.PathLike[str], like: Network) -> Network:
    """A network of `like`'s structure, on its device, with the parameters of the Grenade
    model file at `path` (for a RecurrentNetwork, with or without the starting states after
    them; without, they are zero). ModelFileError if the file does not hold exactly those
    arrays."""
    if type(like) not in (Network, RecurrentNetwork):
        raise TypeError(f"load_grenade reads Grenade files of networks: like must be a Network "
                        f"or RecurrentNetwork, got {type(like).__name__}")
    path = Path(path)
    expected = _grenade_arrays(like, read=False)
    sizes = [8 + 8 * a.size for _, a in expected]
    states = sum(layer is None for layer, _ in expected)
    # like's arrays say the file's size exactly: checked before reading (a sparse or endless
    # file is refused without being read).
    allowed = {sum(sizes), sum(sizes[:len(sizes) - states])}
    try:
        found = path.stat().st_size
        if not path.is_file():
            raise ModelFileError(f"{path} is not a regular file")
        if found not in allowed:
            raise ModelFileError(f"{path} is not a Grenade file of {like!r}: it has {found} "
                                 f"bytes, where that network's parameters take "
                                 f"{' or '.join(map(str, sorted(allowed, reverse=True)))}")
        blob = path.read_bytes()
    except OSError as e:
        raise ModelFileError(f"cannot read {path}: {e.strerror or e}") from None
    net = type(like).from_spec(like.spec(), device=like.device, seed=0)
    layers = dict(zip(map(id, _layers_with_parameters(like)), _layers_with_parameters(net),
                      strict=True))
    at, read = 0, []
    for layer, array in expected:
        if at == len(blob):  # a recurrent network's file without its states
            break
        what = f"{layer!r}" if layer is not None else "a starting state"
        if struct.unpack(">Q", blob[at:at + 8])[0] != array.size:
            raise ModelFileError(f"{path} is not a Grenade file of {like!r}: {what} should "
                                 f"hold {array.size} values here")
        with np.errstate(over="ignore"):  # too large for float32: refused just below
            value = np.frombuffer(blob, ">f8", array.size, at + 8).reshape(
                array.shape).astype(net.device.dtype)
        if not np.all(np.isfinite(value)):
            raise ModelFileError(f"{path}: {what} is not finite in {net.device.precision}")
        read.append((layer, value))
        at += 8 + 8 * array.size
    by_layer: dict[int, list[np.ndarray]] = {}
    for layer, value in read:
        if layer is not None:
            by_layer.setdefault(id(layer), []).append(value)
    for key, values in by_layer.items():
        target = layers[key]
        for name, value in FORMS[type(target).__name__][1](values).items():
            target.parameters[name].set(np.ascontiguousarray(value))
    if isinstance(net, RecurrentNetwork):
        for (_, cell), (_, value) in zip(net.recurrent_layers(),
                                         [r for r in read if r[0] is None], strict=False):
            cell.parameters["state"].set(value)
    return net
