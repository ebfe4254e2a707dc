"""The datasets the programs read, with their validation: MNIST's IDX files and plain texts.
Each reader raises DataError saying what is wrong with the file, never a traceback of numpy's.

IDX (big-endian): images have magic 2051, count, rows, cols, then count*rows*cols bytes;
labels have magic 2049, count, then count bytes. Files may be gzipped.
"""
from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from grenade_py.errors import DataError

IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file (gzipped or not) of unsigned bytes: images (count, rows, cols) for magic
    2051, labels (count,) for magic 2049. Raises DataError naming what is wrong."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except OSError as e:  # gzip.BadGzipFile and EOFError-free truncation land here or below
        raise DataError(f"cannot read {path}: {e}") from None
    except (EOFError, zlib.error):
        raise DataError(f"{path} is a truncated or corrupted gzip file") from None
    if len(raw) < 8:
        raise DataError(f"{path} is too short to be an IDX file ({len(raw)} bytes)")
    magic, count = struct.unpack(">II", raw[:8])
    shape: tuple[int, ...]
    if magic == IMAGES_MAGIC:
        if len(raw) < 16:
            raise DataError(f"{path}: image header cut short")
        rows, cols = struct.unpack(">II", raw[8:16])
        shape, offset = (count, rows, cols), 16
    elif magic == LABELS_MAGIC:
        shape, offset = (count,), 8
    else:
        raise DataError(f"{path} has magic number {magic}, not an IDX image ({IMAGES_MAGIC}) or "
                        f"label ({LABELS_MAGIC}) file")
    expected = offset + math.prod(shape)  # Python ints: a header of huge sizes cannot wrap
    if len(raw) != expected:
        raise DataError(f"{path}: header says {count} items ({expected} bytes) but the file has "
                        f"{len(raw)} bytes{' (truncated)' if len(raw) < expected else ''}")
    return np.frombuffer(raw, np.uint8, offset=offset).reshape(shape)


def _find(directory: Path, pattern: str) -> Path:
    matches = sorted(directory.glob(pattern))
    if not matches:
        raise DataError(f"no file matching {pattern!r} in {directory}")
    return matches[0]


def load_mnist(directory: str | Path) -> tuple[np.ndarray, ...]:
    """(train_x, train_y, test_x, test_y) from a folder of MNIST IDX files: x (N, 784) float in
    [0, 1], y (N, 10) one-hot. Training files match `*train*-images-idx3-ubyte*` and
    `*train*-labels-idx1-ubyte*`, test files `t10k-*`."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"MNIST folder {directory} does not exist")
    sets = []
    for kind in ("*train*", "t10k"):
        images = read_idx(_find(directory, f"{kind}-images-idx3-ubyte*"))
        labels = read_idx(_find(directory, f"{kind}-labels-idx1-ubyte*"))
        if images.ndim != 3 or labels.ndim != 1:
            raise DataError(f"{directory}: {kind} images and labels files are swapped")
        if len(images) != len(labels):
            raise DataError(f"{directory}: {len(images)} {kind} images but {len(labels)} labels")
        if len(images) == 0 or images.shape[1:] != (28, 28):
            raise DataError(f"{directory}: {kind} images are {len(images)} of "
                            f"{images.shape[1]}x{images.shape[2]}; MNIST has 28x28 images")
        if labels.max(initial=0) > 9:
            raise DataError(f"{directory}: {kind} labels go up to {labels.max()}, not 0-9")
        sets += [images.reshape(len(images), -1) / 255.0, np.eye(10)[labels]]
    return tuple(sets)


def read_text(path: str | Path) -> str:
    """A UTF-8 text file's contents; DataError if it cannot be read as one."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read the text {path}: {e}") from None
