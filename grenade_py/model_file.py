"""The model file format: a JSON header and raw arrays in one checksummed, versioned file.

Format version 2, all integers little-endian:

    8 bytes   magic  b"GRNDPY\\x00\\x02"  (the last byte: format version 2)
    8 bytes   uint64 length H of the header
    H bytes   UTF-8 JSON header: what the caller stores (for a Network: its precision and
              structure, see `grenade_py.network`), plus
              "arrays": [{...what the caller says of the array..., "shape": [...],
                          "offset": bytes into the data}, ...], "data_bytes": D
    D bytes   the arrays, raw little-endian values of the header's "precision", in header order,
              each starting where the one before ends
    4 bytes   uint32 CRC-32 of every byte before it (header included)

Files are written to a temporary file beside the target and renamed over it, so a crash never
leaves half a file; a save removes temporary files that an earlier, killed save of the same target
left. No pickle: reading never runs code from the file. This module knows nothing of networks.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from grenade_py.errors import ModelFileError

VERSION = 2
MAGIC = b"GRNDPY\x00"
DTYPES: dict[str, np.dtype] = {"float32": np.dtype("<f4"), "float64": np.dtype("<f8")}
#: No header of ours comes near this; a larger claim is a corrupted length.
MAX_HEADER = 1 << 26


def _temp_prefix(target: Path) -> str:
    """Temporary files of saves to `target`: short (valid beside any valid file name) and
    recognisable, so a later save can remove what a killed one left."""
    return f".{hashlib.sha1(target.name.encode()).hexdigest()[:12]}.gnpy-partial."


def write(path: str | os.PathLike[str], header: dict[str, Any],
          arrays: list[tuple[dict[str, Any], np.ndarray]]) -> None:
    """Write `header` and `arrays` (each with what the header says of it) to `path`, atomically.
    The arrays are stored in the header's "precision". A new file gets the mode the umask
    gives; an existing file keeps its mode."""
    dtype = DTYPES[header["precision"]]
    entries, chunks, offset = [], [], 0
    for meta, value in arrays:
        raw = np.ascontiguousarray(value, dtype=dtype).tobytes()
        entries.append(meta | {"shape": list(value.shape), "offset": offset})
        chunks.append(raw)
        offset += len(raw)
    head = json.dumps(header | {"arrays": entries, "data_bytes": offset}).encode()
    body = MAGIC + bytes([VERSION]) + struct.pack("<Q", len(head)) + head + b"".join(chunks)
    body += struct.pack("<I", zlib.crc32(body))
    write_atomically(path, body)


def write_atomically(path: str | os.PathLike[str], body: bytes) -> None:
    """Write `body` to `path` through a temporary file beside it, renamed over it: a crash
    never leaves half a file. A new file gets the mode the umask gives; an existing file keeps
    its mode. ModelFileError if it cannot be written."""
    target = Path(path)
    prefix = _temp_prefix(target)
    tmp: str | None = None
    try:
        for stale in target.parent.glob(prefix + "*"):
            stale.unlink(missing_ok=True)
        try:
            mode = target.stat().st_mode & 0o7777
        except FileNotFoundError:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=prefix)
        with os.fdopen(fd, "wb") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise ModelFileError(f"cannot write {target}: {e.strerror or e}") from e
        raise


def read(path: str | os.PathLike[str]) -> tuple[dict[str, Any], list[tuple[dict[str, Any],
                                                                           np.ndarray]]]:
    """The header and arrays of a file written by `write`. Raises ModelFileError for a file
    that is not one, is of another version, truncated, too long, or fails its checksum; reads
    no more than the file's header says it holds."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            start = f.read(16)
            if len(start) < 16 or not start.startswith(MAGIC):
                raise ModelFileError(f"{path} is not a grenade_py model file (bad magic bytes)")
            if start[7] != VERSION:
                raise ModelFileError(f"{path} is model format version {start[7]}; this "
                                     f"grenade_py reads version {VERSION}")
            (length,) = struct.unpack("<Q", start[8:16])
            if length > MAX_HEADER:
                raise ModelFileError(f"{path} is corrupted: it claims a {length}-byte header")
            head = f.read(length)
            if len(head) < length:
                raise ModelFileError(f"{path} is truncated (header cut short)")
            header = _parse(path, head)
            left = os.fstat(f.fileno()).st_size - f.tell()
            if left < header["data_bytes"] + 4:  # before allocating what the header claims
                raise ModelFileError(f"{path} is truncated: {left} of "
                                     f"{header['data_bytes'] + 4} bytes after the header")
            rest = f.read(header["data_bytes"] + 4)
            if len(rest) < header["data_bytes"] + 4:
                raise ModelFileError(f"{path} is truncated: {len(rest)} of "
                                     f"{header['data_bytes'] + 4} bytes after the header")
            if f.read(1):
                raise ModelFileError(f"{path} has trailing bytes after its checksum")
    except OSError as e:
        raise ModelFileError(f"cannot read {path}: {e.strerror or e}") from None
    (crc,) = struct.unpack("<I", rest[-4:])
    if zlib.crc32(rest[:-4], zlib.crc32(start + head)) != crc:
        raise ModelFileError(f"{path} is corrupted: it fails its CRC-32 check")
    dtype = DTYPES[header["precision"]]
    arrays = []
    for entry in header["arrays"]:
        count = int(np.prod(entry["shape"], dtype=np.int64))
        value = np.frombuffer(rest, dtype, count, entry["offset"]).reshape(entry["shape"])
        meta = {k: v for k, v in entry.items() if k not in ("shape", "offset")}
        arrays.append((meta, value))
    return header, arrays


def _parse(path: Path, head: bytes) -> dict[str, Any]:
    """The JSON header, its arrays checked to tile the data exactly."""
    try:
        header = json.loads(head)
        if (not isinstance(header, dict) or header.get("precision") not in DTYPES
                or not isinstance(header.get("arrays"), list)):
            raise ValueError("no precision or arrays")
        itemsize = DTYPES[header["precision"]].itemsize
        offset = 0
        for entry in header["arrays"]:
            shape = entry["shape"]
            if (not isinstance(shape, list) or
                    not all(type(d) is int and 0 < d < 1 << 40 for d in shape)):
                raise ValueError(f"bad array shape {shape!r}")
            if type(entry["offset"]) is not int or entry["offset"] != offset:
                raise ValueError(f"array offset {entry['offset']!r} is not {offset}")
            offset += int(np.prod(shape, dtype=object)) * itemsize
        if type(header.get("data_bytes")) is not int or header["data_bytes"] != offset:
            raise ValueError(f"data_bytes is not {offset}, the arrays' total")
    except (ValueError, KeyError, TypeError, RecursionError) as e:
        raise ModelFileError(f"{path} has a corrupted header ({e})") from None
    return header
