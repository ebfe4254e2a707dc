"""The errors grenade_py raises, each one something a user can act on, and the wrappers that
turn an OpenCL error into a DeviceError saying what was being done."""
from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any, TypeVar, cast

import pyopencl as cl


class GrenadeError(Exception):
    """Base class of every error grenade_py raises on purpose."""


class ShapeError(GrenadeError, ValueError):
    """A layer was given an input shape it cannot take (raised when a Network is built).

    `located` says the message already names where in the network (and the input shape): an
    enclosing network then only prefixes its own place."""

    def __init__(self, message: str, located: bool = False) -> None:
        super().__init__(message)
        self.located = located


class DeviceError(GrenadeError):
    """No usable OpenCL platform or device, or a device lacks a feature that was asked for."""


class KernelBuildError(GrenadeError):
    """An OpenCL program failed to compile; the message carries the compiler log."""


class ModelFileError(GrenadeError):
    """A model file is truncated, corrupted, of another format version or another architecture."""


class DataError(GrenadeError, ValueError):
    """A data file (e.g. MNIST IDX) is missing, truncated or not what its header says."""


F = TypeVar("F", bound=Callable[..., Any])


def opencl_errors(func: F) -> F:
    """Decorate a function so that an OpenCL error inside it is a DeviceError naming it."""
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with named_errors(f"{func.__name__.replace('_', ' ')}"):
            return func(*args, **kwargs)

    return cast(F, wrapper)


@contextlib.contextmanager
def named_errors(what: str) -> Iterator[None]:
    """Turn an OpenCL error inside into a DeviceError saying what was being done."""
    try:
        yield
    except cl.Error as e:
        raise DeviceError(f"OpenCL failed to {what}: {e}") from None
