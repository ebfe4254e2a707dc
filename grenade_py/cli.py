"""What the command-line tools share: the optimiser and learning parameters as click options,
the device they announce, and GrenadeErrors turned into one-line messages instead of
tracebacks."""
from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import click

from grenade_py.device import PRECISIONS, Device
from grenade_py.errors import GrenadeError
from grenade_py.network import Network
from grenade_py.network_file import read_optimizer
from grenade_py.optimizers import OPTIMIZERS, Adam, LearningParameters, Optimizer
from grenade_py.platforms import generic_cpu_note
from grenade_py.schedules import schedule_rate

F = TypeVar("F", bound=Callable[..., Any])


def device_options(command: F) -> F:
    """The options every CLI takes to choose its device: --device and --precision."""
    command = click.option("--precision", type=click.Choice(["float32", "float64"]),
                           default="float32", show_default=True)(command)
    return click.option("--device", "device_spec", default=None,
                        help="PLATFORM:DEVICE (see `python -m grenade_py.devices`).")(command)


def learning_options(momentum: float, l2: float, rate: float | None = 0.01,
                     epochs: str | None = "epochs", optimizer: str | None = "sgd"
                     ) -> Callable[[F], F]:
    """Grenade's -r/--train_rate, --momentum and --l2, with an example's defaults (SGD's), and
    --optimizer; with `epochs` (what the program's schedule steps over), --clip-norm and
    --schedule too (see `optimizer_from_options`)."""
    def decorate(command: F) -> F:
        if epochs is not None:
            command = click.option(
                "--schedule", default=None, metavar="SCHEDULE",
                help=f"Learning rate per {epochs}: constant, step:EVERY:FACTOR, "
                     "exponential:FACTOR (Grenade's mnist: exponential:0.9) or cosine  "
                     "[default: constant]")(command)
            command = click.option("--clip-norm", type=float, default=None,
                                   help="Rescale each gradient to at most this global L2 norm "
                                        "before the step.")(command)
        shown = optimizer or "the architecture's"
        command = click.option("--optimizer", type=click.Choice(sorted(OPTIMIZERS)),
                               default=None,
                               help="sgd: Grenade's momentum + L2 step; adam, adamw: "
                                    f"torch.optim's.  [default: {shown}; with --load, the "
                                    "model's]")(command)
        command = click.option("--l2", type=float, default=None,
                               help=f"L2 regulariser (Adam, AdamW: weight_decay)  [default: {l2}"
                                    "; adam: 0; adamw: 0.01]")(command)
        command = click.option("--momentum", type=float, default=None,
                               help=f"SGD's momentum  [default: {momentum}]")(command)
        shown = f"{rate}" if rate is not None else "the architecture's"
        return click.option("-r", "--train_rate", "--train-rate", "rate", default=None,
                            type=float,
                            help=f"Learning rate  [default: {shown}; adam, adamw: 0.001]"
                            )(command)
    return decorate


def chosen_optimizer(name: str | None, load: str | None, default: str) -> str:
    """--optimizer's value: as given, else that of the model file `load` (whose state it holds,
    so that a resumed run goes on as it was), else `default`. A file that cannot be read says
    so when it is loaded."""
    if name is None and load:
        with contextlib.suppress(GrenadeError, OSError):
            name = read_optimizer(load)
    return name if name in OPTIMIZERS else default


#: The option giving each optimiser field (Adam's weight decay is --l2).
OPTIMIZER_FLAGS = {"rate": "-r/--train_rate", "momentum": "--momentum", "l2": "--l2",
                   "weight_decay": "--l2", "clip_norm": "--clip-norm"}


def optimizer_from_options(name: str, rate: float | None, momentum: float | None,
                           l2: float | None, clip_norm: float | None,
                           defaults: tuple[float, float, float], precision: str) -> Optimizer:
    """The optimiser the CLI options describe: `name` (sgd, adam, adamw) with the rate, and
    for SGD the momentum and L2, each from `defaults` (SGD's rate, momentum, l2) where not
    given; for Adam and AdamW --l2 is the weight decay and torch's defaults fill the rest. A
    bad value, one that `precision` cannot hold, or --momentum with Adam, is a usage error
    naming it."""
    try:
        chosen: Optimizer
        if name == "sgd":
            chosen = LearningParameters(rate if rate is not None else defaults[0],
                                        momentum if momentum is not None else defaults[1],
                                        l2 if l2 is not None else defaults[2], clip_norm)
            chosen.check(PRECISIONS[precision][1])
            return chosen
        if momentum is not None:
            raise click.BadParameter(f"is SGD's; {name}'s moments decay at its beta1 0.9 and "
                                     "beta2 0.999", param_hint="--momentum")
        kind = OPTIMIZERS[name]
        assert issubclass(kind, Adam)
        values: dict[str, Any] = {"rate": rate if rate is not None else 1e-3,
                                  "clip_norm": clip_norm}
        if l2 is not None:
            values["weight_decay"] = l2
        chosen = kind(**values)
        chosen.check(PRECISIONS[precision][1])
        return chosen
    except ValueError as e:  # "SGD.rate must be > 0, got -1" names the option instead
        field = re.fullmatch(r"\w+\.(\w+) (must be .*)", str(e))
        if field is None or field[1] not in OPTIMIZER_FLAGS:
            raise click.BadParameter(str(e)) from None
        raise click.BadParameter(field[2].replace(" (or None)", ""),
                                 param_hint=OPTIMIZER_FLAGS[field[1]]) from None


def given(option: str) -> bool:
    """Whether the running command's `option` (its parameter name) was given, not defaulted."""
    source = click.get_current_context().get_parameter_source(option)
    return source is not click.core.ParameterSource.DEFAULT


def tenths(total: int) -> list[int]:
    """Where each of 10 rounds over `total` items ends (round k: items ends[k - 1] .. ends[k],
    ends[-1] being 0): every item in one round, the rounds of a total below 10 partly
    empty."""
    return [total * k // 10 for k in range(1, 11)]


def check_schedule(schedule: str | None, rate: float, epochs: int) -> None:
    """A usage error now, before any training, unless `schedule` gives every epoch a rate."""
    try:
        for epoch in range(epochs):
            schedule_rate(schedule, rate, epoch, epochs)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--schedule") from None


def model_file_options(command: F) -> F:
    """--load and --save of a model file."""
    command = click.option("--save", type=click.Path(dir_okay=False),
                           help="Write the trained model here.")(command)
    return click.option("--load", type=click.Path(dir_okay=False),
                        help="Start from this model file.")(command)


def report_options(command: F) -> F:
    """--log FILE.jsonl and --plot FILE.png (see grenade_py.plots)."""
    command = click.option("--plot", type=click.Path(dir_okay=False), default=None,
                           help="Draw the run (loss and accuracy per epoch or round) in this "
                                "PNG; needs matplotlib.")(command)
    return click.option("--log", type=click.Path(dir_okay=False), default=None,
                        help="Write each epoch's or round's figures here, a JSON line each."
                        )(command)


def run_log(log: str | None, plot: str | None, title: str, step: str = "epoch",
            **series: Any) -> Any:
    """The RunLog of --log and --plot, their paths checked writable first (usage errors)."""
    from grenade_py.plots import RunLog

    check_writable(log, "--log")
    check_writable(plot, "--plot")
    with user_errors():
        return RunLog(log, plot, title, step, **series)


def open_device(spec: str | None, precision: str, announce: bool = True) -> Device:
    """The chosen device, printed once to stderr."""
    device = Device(spec, precision=precision)
    if announce:
        note = generic_cpu_note(device.cl_device)
        click.echo(f"device: {device.name}" + (f" ({note})" if note else ""), err=True)
    return device


def check_writable(path: str | None, option: str = "--save") -> None:
    """A usage error now, before any training, unless a model file can be written at `path`:
    a file is created beside it and removed (asking the OS whether it may be written says yes
    to root anywhere)."""
    if path is None:
        return
    if not path.strip():
        raise click.BadParameter("is empty: give the model file's path", param_hint=option)
    target = Path(path)
    folder = target.parent
    if not folder.is_dir():
        raise click.BadParameter(f"folder {folder} does not exist", param_hint=option)
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".grenade-py-probe.")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise click.BadParameter(f"cannot write in {folder}: {e.strerror or e}",
                                 param_hint=option) from None
    if target.exists() and not os.access(target, os.W_OK):
        raise click.BadParameter(f"cannot write {target}", param_hint=option)


@contextlib.contextmanager
def save_on_interrupt(net: Network, path: str | None,
                      trained: Callable[[], bool] | None = None,
                      metadata: dict[str, Any] | None = None, resumable: bool = True
                      ) -> Iterator[None]:
    """On Ctrl-C, save what was trained to `path` (if given and `trained()`: by default, if
    the network took an optimiser step inside the block) with `metadata`, say so (and, if
    `resumable`, that --load goes on from it), and exit with status 130. On any other error
    once training has begun, save it too (unless it cannot be saved, say a diverged network:
    then say why) and let the error go on."""
    resume = f" (resume with --load {path})" if resumable else ""
    # A step moves the step count, or (another optimiser's first, which restarts the count
    # from zero: optimizers.take_state) the optimiser the network's state belongs to.
    begun = net.steps, net.optimizer_name
    if trained is None:
        def trained() -> bool:
            return (net.steps, net.optimizer_name) != begun
    try:
        yield
    except KeyboardInterrupt:
        if path and trained():
            net.save(path, metadata)
            click.echo(f"\ninterrupted: saved what was trained to {path}{resume}", err=True)
        else:
            click.echo("\ninterrupted: nothing saved", err=True)
        sys.exit(130)
    except Exception:
        if path and trained():
            try:
                net.save(path, metadata)
                click.echo(f"\nsaved what was trained to {path} before the error below"
                           f"{resume}", err=True)
            except GrenadeError as e:
                click.echo(f"\nnothing saved: {e}", err=True)
        raise


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Report a GrenadeError (bad device, model file, data...) as a click error message."""
    try:
        yield
    except GrenadeError as e:
        raise click.ClickException(str(e)) from None
