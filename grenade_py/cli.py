"""What the command-line tools share: learning parameters as click options, the device they
announce, and GrenadeErrors turned into one-line messages instead of tracebacks."""
from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import click

from grenade_py.device import Device, generic_cpu_note
from grenade_py.errors import GrenadeError
from grenade_py.network import Network
from grenade_py.optimizers import LearningParameters

F = TypeVar("F", bound=Callable[..., Any])


def device_options(command: F) -> F:
    """The options every CLI takes to choose its device: --device and --precision."""
    command = click.option("--precision", type=click.Choice(["float32", "float64"]),
                           default="float32", show_default=True)(command)
    return click.option("--device", "device_spec", default=None,
                        help="PLATFORM:DEVICE (see `python -m grenade_py.devices`).")(command)


def learning_options(momentum: float, l2: float, rate: float = 0.01) -> Callable[[F], F]:
    """Grenade's -r/--train_rate, --momentum and --l2, with an example's defaults."""
    def decorate(command: F) -> F:
        command = click.option("--l2", default=l2, show_default=True, type=float,
                               help="L2 regulariser.")(command)
        command = click.option("--momentum", default=momentum, show_default=True,
                               type=float)(command)
        return click.option("-r", "--train_rate", "--train-rate", "rate", default=rate,
                            show_default=True, type=float, help="Learning rate.")(command)
    return decorate


def model_file_options(command: F) -> F:
    """--load and --save of a model file."""
    command = click.option("--save", type=click.Path(dir_okay=False),
                           help="Write the trained model here.")(command)
    return click.option("--load", type=click.Path(dir_okay=False),
                        help="Start from this model file.")(command)


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
