"""Grenade's recurrent example: an LSTM learns the cycle 0, 0, 1 and then generates it.

    python -m grenade_py.recurrent [-e EXAMPLES] [-r RATE] [--seed N] ...

As Grenade's examples/main/recurrent.hs: a RecurrentNetwork of one LSTM 1 1. Each example is a
window of the endless cycle 0, 0, 1: it starts 0-2 values in, runs 5-30 steps without a target,
then one step whose target is the value that follows. After training, the network runs on its
own from the input 1 and its learned state, each rounded output fed back as the next input;
values 100-149 of what it generates are printed.
"""
from __future__ import annotations

import sys
from collections.abc import Callable
from typing import NamedTuple

import click
import numpy as np

from grenade_py.cli import (
    check_writable,
    chosen_optimizer,
    device_options,
    learning_options,
    model_file_options,
    open_device,
    optimizer_from_options,
    report_options,
    run_log,
    save_on_interrupt,
    tenths,
    user_errors,
)
from grenade_py.device import Device
from grenade_py.layers import LSTM
from grenade_py.optimizers import Optimizer
from grenade_py.recurrent_network import RecurrentNetwork
from grenade_py.recurrent_runner import RecurrentState, run_recurrent, train_sequences
from grenade_py.shapes import D1

CYCLE = (0.0, 0.0, 1.0)
#: Windows per train_sequences call (and per wait, so that Ctrl-C stops within as many).
CHUNK = 1000


def cycle_network(device: Device | None = None,
                  seed: int | np.random.SeedSequence | None = None) -> RecurrentNetwork:
    """Grenade's RecNet: one LSTM 1 1, initialised as randomLSTM."""
    return RecurrentNetwork([LSTM(1, 1)], input=D1(1), device=device, seed=seed, init="grenade")


class Windows(NamedTuple):
    """Training examples as train_sequences takes them: x and targets (n, longest, 1), mask
    (n, longest) and lengths (n,)."""

    x: np.ndarray
    targets: np.ndarray
    mask: np.ndarray
    lengths: np.ndarray


def windows(rng: np.random.Generator, n: int) -> Windows:
    """`n` training examples as Grenade draws them: each `count` (5-30) steps of the cycle from
    offset 0-2 without a target, then a step whose target is the next value."""
    dropping, count = rng.integers(0, 3, n), rng.integers(5, 31, n)
    cycle = np.array(CYCLE)
    x = cycle[(dropping[:, None] + np.arange(31)) % 3][..., None]
    targets, mask = np.zeros_like(x), np.zeros(x.shape[:2], bool)
    rows = np.arange(n)
    targets[rows, count, 0] = cycle[(dropping + count + 1) % 3]
    mask[rows, count] = True
    return Windows(x, targets, mask, count + 1)


def validate(net: RecurrentNetwork, held_out: Windows) -> dict[str, float]:
    """Half the squared error at each window's target, and how often the rounded output is
    the target, over `held_out` (run, not trained)."""
    errors = []
    for x, targets, steps in zip(held_out.x, held_out.targets, held_out.lengths, strict=True):
        ys, _ = run_recurrent(net, x[:steps])
        errors.append(float(ys[-1, 0] - targets[steps - 1, 0]))
    e = np.array(errors)
    return {"val_loss": float(np.mean(0.5 * e ** 2)), "val_accuracy": float(np.mean(
        np.abs(e) < 0.5))}


def train_cycle(net: RecurrentNetwork, learning: Optimizer, examples: int,
                rng: np.random.Generator, progress: bool,
                on_round: Callable[[int], None] | None = None) -> None:
    """`examples` windows, one trainRecurrent step each, in order (given to train_sequences
    CHUNK windows at a time, each of its own length); `on_round(done)` after every tenth of
    them."""
    bar = click.progressbar(length=examples, label="training", file=sys.stderr) \
        if progress and examples else None
    rounds = set(tenths(examples)) - {0}  # fewer than 10: not every tenth
    done = 0
    for end in sorted(rounds | set(range(CHUNK, examples, CHUNK))) if examples else []:
        drawn = windows(rng, end - done)
        train_sequences(net, learning, drawn.x, drawn.targets, drawn.mask, lengths=drawn.lengths)
        net.device.queue.finish()  # Ctrl-C stops within CHUNK windows
        done = end
        if bar is not None:
            bar.update(done - bar.pos)
        if on_round is not None and done in rounds:
            on_round(done)
    if bar is not None:
        bar.render_finish()


def generate(net: RecurrentNetwork, count: int, first: float = 1.0) -> list[int]:
    """Grenade's generateRecurrent: run from `first` and the learned state, feeding each rounded
    output back as the next input; the first `count` values."""
    values: list[int] = []
    state: RecurrentState | None = None
    x = first
    for _ in range(count):
        y, state = run_recurrent(net, np.array([[x]]), state)
        value = int(np.round(np.mean(y)))
        values.append(value)
        x = float(value)
    return values


def is_cycle(values: list[int]) -> bool:
    """Whether `values` follow 0, 0, 1 repeated, from any phase."""
    return any(all(v == CYCLE[(phase + k) % 3] for k, v in enumerate(values))
               for phase in range(3))


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-e", "--examples", default=40000, show_default=True,
              type=click.IntRange(min=0), help="Training windows.")
@learning_options(momentum=0.9, l2=0.0005, epochs=None)
@click.option("--seed", type=click.IntRange(min=0), default=None,
              help="Seed for the initial weights and the windows.")
@model_file_options
@device_options
@report_options
def main(examples: int, rate: float | None, momentum: float | None, l2: float | None,
         optimizer: str | None, seed: int | None, load: str | None, save: str | None,
         device_spec: str | None, precision: str, log: str | None, plot: str | None) -> None:
    """Learn the cycle 0, 0, 1 with an LSTM and print what it generates."""
    optimizer = chosen_optimizer(optimizer, load, "sgd")
    learning = optimizer_from_options(optimizer, rate, momentum, l2, None, (0.01, 0.9, 0.0005),
                                      precision)
    check_writable(save)
    record = run_log(log, plot, "Grenade's recurrent example (0, 0, 1)", "round")
    with user_errors():
        device = open_device(device_spec, precision)
        data_seed, weights_seed, check_seed = np.random.SeedSequence(seed).spawn(3)
        fresh = cycle_network(device, weights_seed)
        net = RecurrentNetwork.load(load, device=device, like=fresh) if load else fresh
        click.echo("Training network...")
        check_rng = np.random.default_rng(check_seed)
        held_out = windows(check_rng, 100)
        with save_on_interrupt(net, save):  # Ctrl-C saves what was trained
            train_cycle(net, learning, examples, np.random.default_rng(data_seed),
                        progress=sys.stderr.isatty(),
                        on_round=(lambda done: record({"round": len(record.records) + 1,
                                                       "windows": done} | validate(net, held_out)))
                        if log or plot else None)
        values = generate(net, 150)[100:]
        click.echo(str(values))
        click.echo("the cycle 0, 0, 1: " + ("learned" if is_cycle(values) else "not learned"))
        if save:
            net.save(save)


if __name__ == "__main__":
    main()
