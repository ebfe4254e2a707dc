"""Model files: a network's layers, shapes, parameters and momentum, in one versioned file.

Format version 1, all integers little-endian:

    8 bytes   magic  b"GRNDPY\\x00\\x01"  (the last two bytes: format version 1)
    8 bytes   uint64 length H of the header
    H bytes   UTF-8 JSON header:
              {"format": "grenade_py", "version": 1, "precision": "float32" | "float64",
               "input": [dims], "shapes": [[dims], ...], "layers": [{"type": ..., args}, ...],
               "arrays": [{"layer": i, "role": "parameters" | "momentum", "name": "weights",
                           "shape": [...], "offset": bytes into the data}, ...],
               "data_bytes": D, "crc32": CRC-32 of the data}
    D bytes   the arrays, raw little-endian values of the header's precision, in header order

The momentum is stored so that training resumed from a file continues exactly. Files are written
to a temporary file beside the target and renamed over it, so a crash never leaves half a file.
No pickle: loading never runs code from the file.
"""
from __future__ import annotations

import json
import os
import struct
import tempfile
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from grenade_py.device import PRECISIONS, Device
from grenade_py.errors import ModelFileError
from grenade_py.shapes import shape_from_dims

if TYPE_CHECKING:
    from grenade_py.network import Network

VERSION = 1
MAGIC = b"GRNDPY\x00"
ROLES = ("parameters", "momentum")


def save(net: Network, path: str | os.PathLike[str]) -> None:
    """Write `net` to `path` atomically (temporary file, then rename)."""
    dtype = np.dtype(net.device.dtype).newbyteorder("<")
    arrays, chunks, offset = [], [], 0
    for role, values in (("parameters", net.get_parameters()), ("momentum", net.get_momentum())):
        for index, layer_values in enumerate(values):
            for name, value in layer_values.items():
                if not np.all(np.isfinite(value)):
                    raise ValueError(f"layer {index} {name} {role} hold NaN or Inf (training "
                                     f"diverged?); nothing was written to {path}")
                raw = np.ascontiguousarray(value, dtype=dtype).tobytes()
                arrays.append({"layer": index, "role": role, "name": name,
                               "shape": list(value.shape), "offset": offset})
                chunks.append(raw)
                offset += len(raw)
    data = b"".join(chunks)
    header = json.dumps({
        "format": "grenade_py", "version": VERSION, "precision": net.device.precision,
        "input": list(net.input_shape.dims), "shapes": [list(s.dims) for s in net.shapes],
        "layers": [layer.spec() for layer in net.layers], "arrays": arrays,
        "data_bytes": len(data), "crc32": zlib.crc32(data),
    }).encode()
    target = Path(path)
    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(MAGIC + bytes([VERSION]) + struct.pack("<Q", len(header)) + header + data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise ModelFileError(f"cannot write {target}: {e.strerror or e}") from e
        raise


def _read_header(path: Path, blob: bytes) -> tuple[dict[str, Any], bytes]:
    if len(blob) < 16 or not blob.startswith(MAGIC):
        raise ModelFileError(f"{path} is not a grenade_py model file (bad magic bytes)")
    if blob[7] != VERSION:
        raise ModelFileError(f"{path} is model format version {blob[7]}; this grenade_py reads "
                             f"version {VERSION}")
    (length,) = struct.unpack("<Q", blob[8:16])
    if 16 + length > len(blob):
        raise ModelFileError(f"{path} is truncated (header cut short)")
    try:
        header = json.loads(blob[16:16 + length])
        data = blob[16 + length:]
        if len(data) < header["data_bytes"]:
            raise ModelFileError(f"{path} is truncated: {len(data)} of {header['data_bytes']} "
                                 "data bytes")
        if len(data) > header["data_bytes"]:
            raise ModelFileError(f"{path} has {len(data) - header['data_bytes']} bytes of "
                                 "trailing garbage")
        if zlib.crc32(data) != header["crc32"]:
            raise ModelFileError(f"{path} is corrupted: its data fails the CRC-32 check")
        if header.get("format") != "grenade_py" or header.get("precision") not in PRECISIONS:
            raise ModelFileError(f"{path} has a header of the wrong format")
    except (ValueError, KeyError, TypeError) as e:  # JSONDecodeError is a ValueError
        raise ModelFileError(f"{path} has a corrupted header ({e})") from None
    return header, data


def load(path: str | os.PathLike[str], device: Device | None = None,
         like: Network | None = None) -> Network:
    """Read a network written by `save`. Arrays are cast to `device`'s precision (default: a new
    Device of the file's precision). With `like`, the architecture must equal like's."""
    from grenade_py.layers import LAYER_TYPES
    from grenade_py.network import Network

    path = Path(path)
    try:
        blob = path.read_bytes()
    except OSError as e:
        raise ModelFileError(f"cannot read model file {path}: {e.strerror}") from None
    header, data = _read_header(path, blob)
    try:
        layers = []
        for spec in header["layers"]:
            spec = dict(spec)
            layers.append(LAYER_TYPES[spec.pop("type")](**spec))
        shapes = [shape_from_dims(dims) for dims in header["shapes"]]
        dtype = np.dtype(PRECISIONS[header["precision"]][1]).newbyteorder("<")
        values: dict[str, list[dict[str, np.ndarray]]] = {
            role: [{} for _ in layers] for role in ROLES
        }
        for entry in header["arrays"]:
            count = int(np.prod(entry["shape"], dtype=np.int64))
            end = entry["offset"] + count * dtype.itemsize
            if entry["offset"] < 0 or end > len(data) or entry["role"] not in ROLES:
                raise ValueError(f"array entry {entry} out of range")
            values[entry["role"]][entry["layer"]][entry["name"]] = np.frombuffer(
                data, dtype, count, entry["offset"]).reshape(entry["shape"])
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise ModelFileError(f"{path} has a corrupted header ({type(e).__name__}: {e})") from None
    if like is not None:
        mine = [layer.spec() for layer in like.layers], like.shapes
        if mine != (header["layers"], shapes):
            raise ModelFileError(
                f"{path} holds another architecture: {_describe(header['layers'], shapes)}, "
                f"expected {_describe(*mine)}"
            )
    if device is None:
        device = like.device if like is not None else Device(precision=header["precision"])
    try:
        net = Network(layers, input=shapes[0], device=device, seed=0)
        if net.shapes != shapes:
            raise ValueError(f"stored shapes {shapes} differ from the layers' {net.shapes}")
        net.set_parameters(values["parameters"])
        net.set_momentum(values["momentum"])
    except (ValueError, TypeError) as e:
        raise ModelFileError(f"{path} is inconsistent: {e}") from None
    return net


def _describe(layers: list[dict[str, Any]], shapes: list[Any]) -> str:
    names = [" ".join([spec["type"], *(str(v) for k, v in spec.items() if k != "type")])
             for spec in layers]
    return f"[{', '.join(names)}] on {shapes[0]!r}"
