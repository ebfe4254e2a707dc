"""What the command-line tools share: learning parameters as click options, the device they
announce, and GrenadeErrors turned into one-line messages instead of tracebacks."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import click

from grenade_py.device import Device
from grenade_py.errors import GrenadeError
from grenade_py.learning import LearningParameters


def learning_parameters(rate: float, momentum: float, l2: float) -> LearningParameters:
    """LearningParameters from CLI options; a bad value is a usage error naming it."""
    try:
        return LearningParameters(rate, momentum, l2)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


def open_device(spec: str | None, precision: str) -> Device:
    """The chosen device, printed once to stderr."""
    device = Device(spec, precision=precision)
    click.echo(f"device: {device.name}", err=True)
    return device


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Report a GrenadeError (bad device, model file, data...) as a click error message."""
    try:
        yield
    except GrenadeError as e:
        raise click.ClickException(str(e)) from None
