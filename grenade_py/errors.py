"""The errors grenade_py raises, each one something a user can act on."""


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
