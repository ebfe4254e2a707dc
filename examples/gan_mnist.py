"""Grenade's GAN (examples/main/gan-mnist.hs): a generator learns to draw MNIST digits against a
LeNet discriminator, with Grenade's lower-level API (run_network, run_gradient, apply_update).

    python examples/gan_mnist.py --data ../shared/data/mnist [--iterations 15] [--png out.png]

Generator: FC 80->256, Relu, Reshape 4x4x16, Deconvolution 16->10 5x5 stride 2, Relu,
Deconvolution 10->1 8x8 stride 2, Logit (a Reshape to D2 28 28 before the Logit, where Grenade's
types say it). Discriminator: the README's LeNet ending in FC 80->1, Logit. Each step is Grenade's
trainExample: the discriminator learns real -> 1 and fake -> 0 (its L2 10x the generator's), and
the generator learns from the delta that would push the discriminator's verdict on its fakes to
1. By default one example per step, as Grenade trains, every example's whole exchange in one
kernel that loops over the examples (grenade_py.exchange: the same steps as train_step, to
rounding); --batch-size B averages B examples per step instead, through train_step (that did
not learn to draw in the runs tried). The images and each iteration's noise are uploaded once.
After each iteration over the images a sample is printed with the feedforward map's ramp. On a
2-core machine an iteration over the 24,000 images takes about 8 s, and samples look like
digits from about the 4th.
"""
from __future__ import annotations

import struct
import sys
import zlib
from pathlib import Path

import click
import numpy as np
import pyopencl.array as cl_array

from grenade_py import (
    D1,
    D2,
    D3,
    Convolution,
    Deconvolution,
    Device,
    FullyConnected,
    LearningParameters,
    Logit,
    Network,
    Pooling,
    Relu,
    Reshape,
    Tapes,
    apply_update,
    run_gradient,
    run_net,
    run_network,
)
from grenade_py.cli import (
    check_writable,
    optimizer_from_options,
    save_on_interrupt,
    user_errors,
)
from grenade_py.datasets import load_mnist
from grenade_py.exchange import Exchange
from grenade_py.model_file import write_atomically

RAMP = np.array([" ", ".", "-", "=", "#"])
#: Examples per launch of the fused exchange (about 0.3 s of work here).
EXCHANGES = 1000


def streams(seed: int) -> tuple[np.random.SeedSequence, np.random.SeedSequence,
                                 np.random.Generator]:
    """Independent seeds of the discriminator and the generator, and the noise's generator,
    all from `seed` (one stream for two of them made the first noise vector the first
    convolution kernel x 5)."""
    discriminator, generator, noise = np.random.SeedSequence(seed).spawn(3)
    return discriminator, generator, np.random.default_rng(noise)


def networks(discriminator_seed: np.random.SeedSequence, generator_seed: np.random.SeedSequence,
             device: Device | str | None = None) -> tuple[Network, Network]:
    """(discriminator, generator), seeded, on `device` (default: a new Device)."""
    discriminator = Network([
        Convolution(1, 10, 5, 5, 1, 1), Pooling(2, 2, 2, 2), Relu(),
        Convolution(10, 16, 5, 5, 1, 1), Pooling(2, 2, 2, 2), Relu(), Reshape(),
        FullyConnected(256, 80), Logit(), FullyConnected(80, 1), Logit()],
        input=D2(28, 28), device=device, seed=discriminator_seed)
    generator = Network([
        FullyConnected(80, 256), Relu(), Reshape(D3(4, 4, 16)), Deconvolution(16, 10, 5, 5, 2, 2),
        Relu(), Deconvolution(10, 1, 8, 8, 2, 2), Reshape(D2(28, 28)), Logit()],
        input=D1(80), device=discriminator.device, seed=generator_seed)
    return discriminator, generator


def train_step(discriminator: Network, generator: Network, rate: LearningParameters,
               real: cl_array.Array, noise: cl_array.Array, tapes: dict[str, Tapes]
               ) -> cl_array.Array:
    """One of Grenade's GAN steps over a minibatch given as device arrays (real (n, 28, 28),
    noise (n, 80)): the whole exchange stays on the device, with no host round trip. Returns
    the discriminator's verdicts on the fakes (n, 1), on the device (0: it sees through them,
    1: fooled). `tapes` holds the last step's tapes, whose buffers this step reuses."""
    n = len(real)
    generator_tape, fake = run_network(generator, noise, tapes.get("generator"))
    real_tape, guess_real = run_network(discriminator, real, tapes.get("real"))
    fake_tape, guess_fake = run_network(discriminator, fake, tapes.get("fake"))
    tapes.update(generator=generator_tape, real=real_tape, fake=fake_tape)
    from_real, _ = run_gradient(discriminator, real_tape, (guess_real - 1) / n)
    from_fake, _ = run_gradient(discriminator, fake_tape, guess_fake / n)
    _, push = run_gradient(discriminator, fake_tape, (guess_fake - 1) / n)
    for_generator, _ = run_gradient(generator, generator_tape, push)
    apply_update(discriminator, stronger(rate), from_real)
    apply_update(discriminator, stronger(rate), from_fake)
    apply_update(generator, rate, for_generator)
    return guess_fake


def stronger(rate: LearningParameters) -> LearningParameters:
    """The discriminator's learning parameters: the generator's, with 10x its L2."""
    return LearningParameters(rate.rate, rate.momentum, rate.l2 * 10)


def ascii_image(image: np.ndarray) -> str:
    """A 28 x 28 image with the feedforward map's ramp (thresholds 0.2, 0.4, 0.6, 0.8)."""
    index = np.searchsorted([0.2, 0.4, 0.6, 0.8], image, side="left")
    return "\n".join("".join(row) for row in RAMP[index])


def tiles(rows: list[np.ndarray]) -> np.ndarray:
    """Rows of images (each (k, 28, 28)) as one image, 2 pixels of grey between them."""
    gap = 2
    count = max(len(row) for row in rows)
    out = np.full((len(rows) * (28 + gap) - gap, count * (28 + gap) - gap), 0.5)
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            out[r * (28 + gap):r * (28 + gap) + 28, c * (28 + gap):c * (28 + gap) + 28] = image
    return out


def write_png(path: Path, image: np.ndarray) -> None:
    """A greyscale PNG of values in [0, 1] (rows of bytes, zlib-compressed, CRC per chunk),
    written atomically."""
    pixels = np.clip(image * 255, 0, 255).astype(np.uint8)
    raw = b"".join(b"\x00" + row.tobytes() for row in pixels)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", pixels.shape[1], pixels.shape[0], 8, 0, 0, 0, 0)
    write_atomically(path, b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) +
                     chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


@click.command()
@click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False))
@click.option("--iterations", default=15, show_default=True, type=click.IntRange(min=1))
@click.option("--examples", default=24000, show_default=True, type=click.IntRange(min=1),
              help="Real images per iteration (at most those in the data).")
@click.option("--batch-size", default=1, show_default=True, type=click.IntRange(min=1),
              help="Examples per step: 1 is Grenade's.")
@click.option("-r", "--train_rate", "rate", default=0.01, show_default=True, type=float)
@click.option("--seed", default=1, show_default=True, type=click.IntRange(min=0))
@click.option("--png", type=click.Path(dir_okay=False),
              help="Also draw 8 samples after each pass here, a row per pass (the same noise "
                   "each time).")
@click.option("--save", type=click.Path(dir_okay=False),
              help="Write the trained generator here (a model file).")
def main(data_dir: str, iterations: int, examples: int, batch_size: int, rate: float,
         seed: int, png: str | None, save: str | None) -> None:
    """Train Grenade's MNIST GAN and print a generated digit after each iteration."""
    lp = optimizer_from_options("sgd", rate, None, None, None, (rate, 0.9, 0.0005), "float32")
    assert isinstance(lp, LearningParameters)
    check_writable(save)
    check_writable(png, "--png")
    with user_errors():
        train(data_dir, iterations, examples, batch_size, lp, seed, png, save)


def train(data_dir: str, iterations: int, examples: int, batch_size: int,
          lp: LearningParameters, seed: int, png: str | None, save: str | None) -> None:
    """main's run, its options checked."""
    train_x = load_mnist(data_dir)[0].reshape(-1, 28, 28)[:examples]
    discriminator_seed, generator_seed, rng = streams(seed)
    discriminator, generator = networks(discriminator_seed, generator_seed)
    tapes: dict[str, Tapes] = {}
    shown = np.random.default_rng([seed, 7]).uniform(-1, 1, size=(8, 80))  # its own stream
    rows = []
    device = discriminator.device
    images = device.to_device(train_x)  # uploaded once; each step takes a slice
    verdicts = device.zeros((len(train_x), 1))
    exchange = Exchange(discriminator, generator) if batch_size == 1 else None
    # Ctrl-C saves the generator (no --load to offer: the critic is not kept)
    with save_on_interrupt(generator, save, resumable=False):
        for iteration in range(1, iterations + 1):
            # The iteration's noise in one draw (the same numbers as a draw per step) and upload.
            noise = device.to_device(rng.uniform(-1, 1, size=(len(train_x), 80)))
            for start in range(0, len(train_x), EXCHANGES if exchange else batch_size):
                if exchange is not None:  # each launch waited for, so that Ctrl-C is honoured
                    exchange(images, noise, verdicts, start, min(EXCHANGES, len(train_x) - start),
                             stronger(lp), lp)
                    device.queue.finish()
                    continue
                end = min(start + batch_size, len(train_x))
                verdicts[start:end] = train_step(discriminator, generator, lp, images[start:end],
                                                  noise[start:end], tapes)
            _, sample = run_network(generator, rng.uniform(-1, 1, size=80))
            click.echo(f"iteration {iteration}: discriminator's verdict on fakes "
                       f"{verdicts.get().mean():.3f}\n{ascii_image(sample)}")
            sys.stdout.flush()
            if png:
                rows.append(run_net(generator, shown))
                write_png(Path(png), tiles(rows))
    if save:
        generator.save(save)


if __name__ == "__main__":
    main()
