"""What the command-line tools share: learning parameters as click options, the device they
announce, and GrenadeErrors turned into one-line messages instead of tracebacks."""
from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from grenade_py.device import Device, generic_cpu_note
from grenade_py.errors import GrenadeError
from grenade_py.learning import LearningParameters
from grenade_py.network import Network


def learning_parameters(rate: float, momentum: float, l2: float) -> LearningParameters:
    """LearningParameters from CLI options; a bad value is a usage error naming it."""
    try:
        return LearningParameters(rate, momentum, l2)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


def open_device(spec: str | None, precision: str, announce: bool = True) -> Device:
    """The chosen device, printed once to stderr."""
    device = Device(spec, precision=precision)
    if announce:
        note = generic_cpu_note(device.cl_device)
        click.echo(f"device: {device.name}" + (f" ({note})" if note else ""), err=True)
    return device


def check_writable(path: str | None, option: str = "--save") -> None:
    """A usage error now, before any training, unless a model file can be written at `path`."""
    if path is None:
        return
    target = Path(path)
    folder = target.parent
    if not folder.is_dir():
        raise click.BadParameter(f"folder {folder} does not exist", param_hint=option)
    if not os.access(folder, os.W_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise click.BadParameter(f"cannot write {target}", param_hint=option)


@contextlib.contextmanager
def save_on_interrupt(net: Network, path: str | None, trained: Callable[[], bool],
                      metadata: dict[str, Any] | None = None) -> Iterator[None]:
    """On Ctrl-C, save what was trained to `path` (if given and `trained()`) with `metadata`,
    say so, and exit with status 130."""
    try:
        yield
    except KeyboardInterrupt:
        if path and trained():
            net.save(path, metadata)
            click.echo(f"\ninterrupted: saved what was trained to {path} (resume with --load "
                       f"{path})", err=True)
        else:
            click.echo("\ninterrupted: nothing saved", err=True)
        sys.exit(130)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Report a GrenadeError (bad device, model file, data...) as a click error message."""
    try:
        yield
    except GrenadeError as e:
        raise click.ClickException(str(e)) from None
