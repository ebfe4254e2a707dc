"""MNIST: `python -m grenade_py.mnist`, minibatch training of an MLP, LeNet or InceptionMini.

    python -m grenade_py.mnist --data ../shared/data/mnist [--arch mlp|mlp3] [--epochs 10] ...

It reads the IDX files with `grenade_py.datasets.load_mnist`.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
import numpy as np

from grenade_py.cli import (
    check_schedule,
    check_writable,
    chosen_optimizer,
    device_options,
    given,
    learning_options,
    open_device,
    optimizer_from_options,
    report_options,
    run_log,
    save_on_interrupt,
    user_errors,
)
from grenade_py.datasets import load_mnist
from grenade_py.device import Device
from grenade_py.errors import GrenadeError, ModelFileError
from grenade_py.layers import (
    BatchNorm,
    Concat,
    Convolution,
    Crop,
    FullyConnected,
    InceptionMini,
    Logit,
    Pooling,
    Relu,
    Reshape,
    Series,
    Softmax,
    Trivial,
)
from grenade_py.network import Network
from grenade_py.network_file import layer_from_spec, read_metadata
from grenade_py.optimizers import Optimizer
from grenade_py.runner import evaluate, fit
from grenade_py.shapes import D1, D2, D3, Shape, parse_shape, size

ARCHS = {
    # The LHask thesis's MLP.
    "mlp": lambda: [FullyConnected(784, 512), Relu(), FullyConnected(512, 10), Softmax()],
    # The backprop tutorial's network.
    "mlp3": lambda: [FullyConnected(784, 300), Logit(), FullyConnected(300, 100), Logit(),
                     FullyConnected(100, 10), Softmax()],
    # Grenade README's LeNet; Grenade ends it in Logit under squared error, we in Softmax under
    # cross-entropy, which learns the 10 classes faster and to a higher accuracy.
    "lenet": lambda: [Convolution(1, 10, 5, 5, 1, 1), Pooling(2, 2, 2, 2), Relu(),
                      Convolution(10, 16, 5, 5, 1, 1), Pooling(2, 2, 2, 2), Reshape(), Relu(),
                      FullyConnected(256, 80), Logit(), FullyConnected(80, 10), Softmax()],
    # The network of Grenade's mnist.hs, its Inception blocks included (and the same head).
    "inception": lambda: [Reshape(D3(28, 28, 1)), Concat(Trivial(), InceptionMini(1, 5, 9)),
                          Pooling(2, 2, 2, 2), Relu(),
                          Concat(Convolution(15, 3, 1, 1, 1, 1), InceptionMini(15, 5, 10)),
                          Crop(1, 1, 1, 1), Pooling(3, 3, 3, 3), Relu(), Reshape(),
                          FullyConnected(288, 80), Logit(), FullyConnected(80, 10), Softmax()],
    # A modern recipe: LeNet's shape with BatchNorm, He's initialisation, AdamW and a cosine
    # schedule over 6 epochs (RECIPES): 99% on the 10k test set in 7.5-14 s of wall time (an
    # AVX-512 EPYC, README's MNIST; a 2-core AVX2 EPYC).
    "bn": lambda: [Convolution(1, 12, 5, 5, 1, 1), BatchNorm(12), Relu(), Pooling(2, 2, 2, 2),
                   Convolution(12, 24, 5, 5, 1, 1), BatchNorm(24), Relu(), Pooling(2, 2, 2, 2),
                   Reshape(), FullyConnected(384, 96), BatchNorm(96), Relu(),
                   FullyConnected(96, 10), Softmax()],
}

INPUTS: dict[str, Shape] = {"mlp": D1(784), "mlp3": D1(784), "lenet": D2(28, 28),
                            "inception": D2(28, 28), "bn": D2(28, 28)}
#: Each architecture's training defaults, where it has its own (the others: SGD at
#: DEFAULT_RATE for 10 epochs, constant rate, init "scaled").
RECIPES: dict[str, dict[str, Any]] = {
    "mlp3": {"rate": 0.1},
    "bn": {"optimizer": "adamw", "rate": 0.003, "l2": 1e-4, "epochs": 6, "schedule": "cosine",
           "init": "he"},
}
DEFAULT_RATE, DEFAULT_EPOCHS = 0.05, 10


def mnist_network(arch: str, device: Device | None = None, seed: int | None = None) -> Network:
    """One of ARCHS on its input (D1 784, or the D2 28 28 image), ending in Softmax (train it
    with loss="cross_entropy"), initialised as its recipe says."""
    return Network(ARCHS[arch](), input=INPUTS[arch], device=device, seed=seed,
                   init=RECIPES.get(arch, {}).get("init", "scaled"))


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False),
              help="Folder holding the MNIST IDX files (gzipped or not).")
@click.option("--arch", type=click.Choice(sorted(ARCHS)), default="mlp", show_default=True,
              help="mlp: 784-512-10; mlp3: 784-300-100-10 with Logit activations; lenet: "
                   "Grenade README's LeNet; inception: Grenade's mnist.hs network; bn: LeNet's "
                   "shape with BatchNorm, AdamW and a cosine schedule.")
@click.option("--arch-file", type=click.Path(dir_okay=False), default=None,
              help="Train the network this JSON file specifies (Network.spec()'s structure: "
                   "784 inputs, D1 10 out of a Softmax) instead of --arch.")
@click.option("--epochs", type=click.IntRange(min=0), default=None,
              help="Passes over the training images; 0: only score the model (a --load'ed "
                   "one) on the test images  [default: 10; bn: 6]")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@learning_options(momentum=0.9, l2=0.0001, rate=None, epochs="epoch", optimizer=None)
@click.option("--seed", type=click.IntRange(min=0), default=1, show_default=True)
@device_options
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Train on the first LIMIT training images only.")
@click.option("--save", type=click.Path(dir_okay=False),
              help="Write the trained model here (also on Ctrl-C after an epoch).")
@click.option("--load", type=click.Path(dir_okay=False),
              help="Resume from a model file written by --save: its optimiser and state, and "
                   "its epochs, which --epochs more go on from (numbered, scheduled and "
                   "shuffled as one run's).")
@report_options
@click.option("--distributed", is_flag=True,
              help="Run as one rank of `mpiexec -n R ...`: data-parallel over the ranks, one "
                   "device each (pip install mpi4py mpich).")
def main(data_dir: str, arch: str, arch_file: str | None, epochs: int | None,
         batch_size: int, rate: float | None, momentum: float | None, l2: float | None,
         optimizer: str | None, clip_norm: float | None,
         schedule: str | None, seed: int, device_spec: str | None, precision: str,
         limit: int | None, save: str | None, load: str | None, log: str | None,
         plot: str | None, distributed: bool) -> None:
    """Train a network on MNIST (the 784-512-10 MLP unless --arch or --arch-file says
    otherwise); print train loss, test accuracy and examples/s per epoch."""
    if arch_file is not None and given("arch"):
        raise click.BadParameter("give --arch or --arch-file, not both",
                                 param_hint="--arch-file")
    recipe = RECIPES.get(arch, {}) if arch_file is None else {}
    optimizer = chosen_optimizer(optimizer, load, recipe.get("optimizer", "sgd"))
    same = optimizer == recipe.get("optimizer", "sgd")  # the recipe's values go with its own
    rate = rate if rate is not None else recipe.get("rate") if same else None
    l2 = l2 if l2 is not None else recipe.get("l2") if same else None
    epochs = epochs if epochs is not None else recipe.get("epochs", DEFAULT_EPOCHS)
    schedule = schedule if schedule is not None else recipe.get("schedule")
    params = optimizer_from_options(optimizer, rate, momentum, l2, clip_norm,
                                    (DEFAULT_RATE, 0.9, 0.0001), precision)
    check_schedule(schedule, params.rate, epochs)
    if not distributed or _rank() == 0:  # only rank 0 saves
        check_writable(save)
    spec = read_arch_file(arch_file) if arch_file is not None else None
    if distributed and batch_size == 1:
        raise click.BadParameter("1 is Grenade's per-example training, which is serial; give "
                                 "distributed training a larger global batch",
                                 param_hint="--batch-size")
    options: dict[str, Any] = dict(
        data_dir=data_dir, arch=arch, spec=spec, epochs=epochs, batch_size=batch_size,
        params=params,
        schedule=schedule, seed=seed, device_spec=device_spec, precision=precision, limit=limit,
        save=save, load=load, log=log, plot=plot)
    if not distributed:
        with user_errors():
            train_mnist(**options)
        return
    from grenade_py.distributed import abort_on_error, world

    comm = world()
    with abort_on_error(comm), user_errors():
        train_mnist(**options, comm=comm)


def _rank() -> int:
    """This process's rank in MPI's world (starting MPI)."""
    from grenade_py.distributed import world

    return int(world().Get_rank())


def read_arch_file(path: str) -> dict[str, Any]:
    """The network spec in the JSON file at `path`, checked (a usage error naming what is
    wrong): it builds, and it maps MNIST's 784 pixels to 10 classes through a Softmax."""
    try:
        spec = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise click.BadParameter(f"cannot read {path}: {e}", param_hint="--arch-file") from None
    if not isinstance(spec, dict) or spec.get("type") != "Network":
        raise click.BadParameter("the file must hold a Network's spec: {\"type\": "
                                 "\"Network\", \"input\": ..., \"layers\": [...]}",
                                 param_hint="--arch-file")
    try:
        structure = layer_from_spec(spec | {"type": "Series"})
        assert isinstance(structure, Series)
        shapes = structure.shape_list(parse_shape(str(spec.get("input", ""))))
    except (ValueError, GrenadeError) as e:
        raise click.BadParameter(str(e), param_hint="--arch-file") from None
    if size(shapes[0]) != 784 or shapes[-1] != D1(10) or not structure.layers or \
            not isinstance(structure.layers[-1], Softmax):
        raise click.BadParameter(f"the network maps {shapes[0]!r} to {shapes[-1]!r}; MNIST needs "
                                 "784 inputs (D1 784, D2 28 28 or D3 28 28 1) and D1 10 out of a "
                                 "Softmax", param_hint="--arch-file")
    return spec


def train_mnist(data_dir: str, arch: str, spec: dict[str, Any] | None, epochs: int,
                batch_size: int,
                params: Optimizer, schedule: str | None, seed: int, device_spec: str | None,
                precision: str, limit: int | None, save: str | None, load: str | None,
                log: str | None = None, plot: str | None = None, comm: Any = None) -> None:
    """The CLI's work: with `comm`, as one rank (only rank 0 prints, draws progress, saves,
    logs and plots)."""
    lead = comm is None or comm.Get_rank() == 0
    record_epoch = run_log(log, plot, f"MNIST, {arch if spec is None else 'network of the spec'}"
                           ) if lead and (log or plot) else None

    def say(message: str, err: bool = False) -> None:
        if lead:
            click.echo(message, err=err)

    train_x, train_y, test_x, test_y = load_mnist(data_dir)
    if limit is not None:
        train_x, train_y = train_x[:limit], train_y[:limit]
    if comm is not None and device_spec is None:
        from grenade_py.distributed import rank_device

        device = rank_device(comm, precision)
        say(f"device: {device.name} (rank 0 of {comm.Get_size()})", err=True)
    else:
        device = open_device(device_spec, precision, announce=lead)
    net = (Network.from_spec(spec, device, seed=seed) if spec is not None
           else mnist_network(arch, device, seed=seed))
    # The epochs done before (a loaded model's), and in all: the file says, so that a resumed
    # run numbers, schedules and shuffles its epochs as one run would.
    done_before = 0
    if load:
        net = Network.load(load, device=device, like=net)
        done_before = read_metadata(load).get("epochs", 0)
        if type(done_before) is not int or done_before < 0:
            raise ModelFileError(f"{load} has a corrupted header (epochs {done_before!r})")
    metadata = {"epochs": done_before}
    train_x = train_x.reshape(len(train_x), *net.input_shape.dims)
    test_x = test_x.reshape(len(test_x), *net.input_shape.dims)
    say(f"{net}\n{net.parameter_count:,} parameters, {len(train_x)} training images, "
        f"{len(test_x)} test images", err=True)
    if epochs == 0:  # a model's scores, as it is (a loaded one's, most usefully)
        scores = evaluate(net, test_x, test_y, loss="cross_entropy")
        say(f"test loss {scores['loss']:.4f}, test accuracy {scores['accuracy']:.4f} after "
            f"{done_before} epochs")
        if save and lead:
            net.save(save, metadata)
        return
    say("epoch  train loss  train acc  test acc  examples/s")
    steps = -(-len(train_x) // batch_size)
    bar = (click.progressbar(length=epochs * steps, file=sys.stderr, label="training")
           if sys.stderr.isatty() and lead else None)
    done = 0

    def progress(step: int, _steps: int) -> None:
        assert bar is not None
        bar.update(done + step - bar.pos)

    def report(record: dict) -> None:
        nonlocal done
        done += steps
        metadata["epochs"] = record["epoch"]
        say(f"{record['epoch']:5d}  {record['loss']:10.4f}  {record['accuracy']:9.4f}"
            f"  {record['val_accuracy']:8.4f}  {record['examples_per_s']:10.0f}")
        if record_epoch is not None:
            record_epoch(record)
        if not np.isfinite(record["loss"]):
            raise click.ClickException("training diverged (loss is not finite); lower --train_rate")

    with save_on_interrupt(net, save if lead else None, lambda: done > 0, metadata):
        fit(net, params, train_x, train_y, batch_size=batch_size, epochs=epochs, seed=seed,
            loss="cross_entropy", validation=(test_x, test_y), on_epoch=report,
            progress=progress if bar is not None else None, comm=comm, schedule=schedule,
            first_epoch=done_before)
    if bar is not None:
        bar.render_finish()
    if save and lead:
        net.save(save, metadata)


if __name__ == "__main__":
    from grenade_py.distributed import as_rank

    as_rank(main)
