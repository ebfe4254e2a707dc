"""Grenade's feedforward example: learn two circles from random points, then draw them in ASCII.

    python -m grenade_py.feedforward [-e EXAMPLES] [-r RATE] [--load FILE] [--save FILE] ...

Network (as Grenade's examples/main/feedforward.hs): FC 2->40, Tanh, FC 40->10, Relu,
FC 10->1, Logit. Data: points uniform in [-1, 1)^2, target 1 inside either circle of radius 0.33
centred at (0.33, 0.33) and (-0.33, -0.33), else 0; one pass, one example at a time by default.
"""
from __future__ import annotations

import sys
from collections.abc import Callable

import click
import numpy as np

from grenade_py.cli import (
    check_schedule,
    check_writable,
    chosen_optimizer,
    device_options,
    learning_options,
    model_file_options,
    open_device,
    optimizer_from_options,
    run_log,
    save_on_interrupt,
    user_errors,
)
from grenade_py.device import Device
from grenade_py.layers import FullyConnected, Logit, Relu, Tanh
from grenade_py.network import Network
from grenade_py.optimizers import Optimizer
from grenade_py.plots import plot_map, pyplot
from grenade_py.runner import fit, run_net, train
from grenade_py.schedules import Schedule, schedule_rate
from grenade_py.shapes import D1

CENTRES = np.array([[0.33, 0.33], [-0.33, -0.33]])
RADIUS = 0.33
#: Examples generated, uploaded and trained at a time, so memory stays flat at any --examples.
CHUNK = 1 << 16


def feedforward_network(device: Device | None = None,
                        seed: int | np.random.SeedSequence | None = None,
                        init: str = "scaled") -> Network:
    """Grenade's feedforward example network: D1 2 -> D1 1."""
    return Network([FullyConnected(2, 40), Tanh(), FullyConnected(40, 10), Relu(),
                    FullyConnected(10, 1), Logit()], input=D1(2), device=device, seed=seed,
                   init=init)


def circles(points: np.ndarray) -> np.ndarray:
    """Targets (N, 1): 1.0 where a point (N, 2) lies in either circle, else 0.0."""
    dist = np.linalg.norm(points[:, None, :] - CENTRES[None], axis=2)
    return (dist <= RADIUS).any(axis=1, keepdims=True).astype(np.float64)


def sample(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n training examples: points uniform in [-1, 1)^2 and their circle targets."""
    points = rng.uniform(-1.0, 1.0, size=(n, 2))
    return points, circles(points)


def grid() -> np.ndarray:
    """Grenade's 21 x 51 map inputs (1071, 2): (x / 25 - 1, y / 10 - 1), rows y, columns x."""
    ys, xs = np.mgrid[0:21, 0:51]
    return np.stack([xs.ravel() / 25 - 1, ys.ravel() / 10 - 1], axis=1)


def render(values: np.ndarray) -> str:
    """The ASCII map of 1071 outputs, by Grenade's thresholds 0.2/0.4/0.6/0.8."""
    chars = np.array([" ", ".", "-", "=", "#"])
    index = np.searchsorted([0.2, 0.4, 0.6, 0.8], values.ravel(), side="left")
    rows = chars[index].reshape(21, 51)
    return "\n".join("".join(row) for row in rows)


def seeds(seed: int | None) -> tuple[np.random.SeedSequence, np.random.SeedSequence]:
    """Independent seeds for the data and for the initial weights, both from `seed`."""
    data, weights = np.random.SeedSequence(seed).spawn(2)
    return data, weights


def train_circles(net: Network, params: Optimizer, examples: int, batch_size: int,
                  rng: np.random.Generator, progress: bool, schedule: Schedule | None = None,
                  on_chunk: Callable[[int], None] | None = None) -> None:
    """One pass over `examples` fresh examples, drawn from `rng` and trained CHUNK at a time:
    Grenade's per-example steps (batch_size 1) or averaged minibatch steps, in order; the
    `schedule` gives each chunk its rate (a chunk is its epoch); `on_chunk(done)` after each
    chunk."""
    bar = (click.progressbar(length=examples, label="training", file=sys.stderr)
           if progress and examples else None)
    chunk = -(-CHUNK // batch_size) * batch_size  # no minibatch straddles two chunks
    chunks = -(-examples // chunk)
    for start in range(0, examples, chunk):
        xs, ys = sample(min(chunk, examples - start), rng)
        step = params.with_rate(schedule_rate(schedule, params.rate, start // chunk, chunks))

        def report(done: int, total: int = 0, start: int = start, count: int = len(xs)) -> None:
            assert bar is not None  # fit reports (step, steps); train reports examples done
            bar.update(start + (done * count // total if total else done) - bar.pos)

        if batch_size == 1:
            train(net, step, xs, ys, per_example=True, progress=report if bar else None)
        else:
            fit(net, step, xs, ys, batch_size=batch_size, epochs=1, shuffle=False,
                progress=report if bar else None)
        if on_chunk is not None:
            on_chunk(start + len(xs))
    net.device.queue.finish()
    if bar is not None:
        bar.render_finish()


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-e", "--examples", default=100000, show_default=True,
              type=click.IntRange(min=0), help="Training examples (one pass).")
@learning_options(momentum=0.9, l2=0.0005, epochs=f"{CHUNK} examples")
@model_file_options
@click.option("--seed", type=click.IntRange(min=0), default=None,
              help="Seed for the initial weights and the data.")
@device_options
@click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True,
              help="1 = Grenade's per-example training; more = averaged minibatch steps.")
@click.option("--plot", type=click.Path(dir_okay=False), default=None,
              help="Also draw the learned map in this PNG; needs matplotlib.")
@click.option("--log", type=click.Path(dir_okay=False), default=None,
              help="Write validation loss and accuracy after each chunk of examples here, a "
                   "JSON line each.")
def main(examples: int, rate: float | None, momentum: float | None, l2: float | None,
         optimizer: str | None, clip_norm: float | None, schedule: str | None, load: str | None,
         save: str | None, seed: int | None, device_spec: str | None, precision: str,
         batch_size: int, plot: str | None, log: str | None) -> None:
    """Learn two circles and draw them, as Grenade's feedforward example does."""
    optimizer = chosen_optimizer(optimizer, load, "sgd")
    params = optimizer_from_options(optimizer, rate, momentum, l2, clip_norm, (0.01, 0.9, 0.0005),
                                    precision)
    check_schedule(schedule, params.rate, -(-examples // CHUNK))
    check_writable(save)
    check_writable(plot, "--plot")
    record = run_log(log, None, "feedforward", "examples")
    with user_errors():
        if plot is not None:
            pyplot()  # matplotlib is there, before any training
        device = open_device(device_spec, precision)
        data_seed, weights_seed = seeds(seed)
        rng = np.random.default_rng(data_seed)
        fresh = feedforward_network(device, seed=weights_seed)
        net = Network.load(load, device=device, like=fresh) if load else fresh
        held_out = sample(2000, np.random.default_rng(np.random.SeedSequence(seed).spawn(3)[2]))

        def validate(done: int) -> None:
            out = run_net(net, held_out[0])
            record({"examples": done, "val_loss": float(np.mean(0.5 * (out - held_out[1]) ** 2)),
                    "val_accuracy": float(np.mean((out > 0.5) == (held_out[1] > 0.5)))})

        with save_on_interrupt(net, save):  # Ctrl-C saves what was trained
            train_circles(net, params, examples, batch_size, rng, progress=sys.stderr.isatty(),
                          schedule=schedule, on_chunk=validate if log else None)
        values = run_net(net, grid())
        if not np.all(np.isfinite(values)):
            raise click.ClickException("training diverged: the network outputs NaN or Inf; "
                                       "lower --train_rate")
        click.echo(render(values))
        if plot is not None:
            axis = np.linspace(-1, 1, 201)
            points = np.stack(np.meshgrid(axis, axis), axis=-1).reshape(-1, 2)
            plot_map(run_net(net, points).reshape(201, 201), plot,
                     "the two circles as learned")
        if save:
            net.save(save)


if __name__ == "__main__":
    main()
