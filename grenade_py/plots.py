"""What the CLIs' --log and --plot write: each epoch's (or round's) record as a JSON line, as it
comes, and PNG pictures of a run (loss and accuracy per epoch; the feedforward map; the GAN's
samples). Pictures need matplotlib (pip install matplotlib: the [plot] extra), drawn off
screen; each file is written atomically, so an interrupted run leaves the last good one."""
from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from grenade_py.errors import GrenadeError
from grenade_py.model_file import write_atomically


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg (file-only) backend; GrenadeError saying how to get it."""
    try:
        import matplotlib
    except ImportError:
        raise GrenadeError("--plot needs matplotlib: pip install matplotlib (the [plot] "
                           "extra)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_figure(figure: Any, path: str | os.PathLike[str]) -> None:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    pyplot().close(figure)
    write_atomically(path, buffer.getvalue())


class RunLog:
    """The records of a run: each appended to `log` (a JSON-lines file, flushed per record) and
    kept for `plot`, which redraws the PNG after every record (so a run stopped early still
    has its picture). The curves: every key of `series` found in the records, by panel."""

    def __init__(self, log: str | None, plot: str | None, title: str, step: str = "epoch",
                 series: Sequence[tuple[str, Sequence[str]]] = (
                     ("loss", ("loss", "val_loss")),
                     ("accuracy", ("accuracy", "val_accuracy")))) -> None:
        if plot is not None:
            pyplot()  # fail before training, not after
        self.log, self.plot, self.title, self.step = log, plot, title, step
        self.series = list(series)
        self.records: list[dict[str, Any]] = []
        if log is not None:
            Path(log).write_text("")

    def __call__(self, record: dict[str, Any]) -> None:
        """Add one record (JSON values; a NaN or infinite figure, a diverged run's, is logged
        as null: JSON has no such numbers)."""
        self.records.append(record)
        if self.log is not None:
            finite = {k: None if isinstance(v, float) and not math.isfinite(v) else v
                      for k, v in record.items()}
            with open(self.log, "a", encoding="utf-8") as f:
                f.write(json.dumps(finite, allow_nan=False) + "\n")
        if self.plot is not None:
            self.draw(self.plot)

    def draw(self, path: str) -> None:
        plt = pyplot()
        figure, axes = plt.subplots(1, len(self.series), figsize=(5 * len(self.series), 3.6))
        for ax, (panel, keys) in zip(np.atleast_1d(axes), self.series, strict=True):
            for key in keys:
                points = [(r[self.step], r[key]) for r in self.records if key in r]
                if points:
                    xs, ys = zip(*points, strict=True)
                    label = key.replace("val_", "validation ") if key.startswith("val_") \
                        else f"training {key}"
                    ax.plot(xs, ys, marker="o", label=label)
            ax.xaxis.get_major_locator().set_params(integer=True)
            ax.set_xlabel(self.step)
            ax.set_ylabel(panel)
            ax.grid(alpha=0.3)
            ax.legend()
        figure.suptitle(self.title)
        figure.tight_layout()
        save_figure(figure, path)


def plot_map(values: np.ndarray, path: str, title: str) -> None:
    """A square map of outputs (rows from y = -1 to 1, cols from x = -1 to 1) as an image."""
    plt = pyplot()
    figure, ax = plt.subplots(figsize=(4.5, 4))
    shown = ax.imshow(values, origin="lower", extent=(-1, 1, -1, 1), cmap="viridis",
                      vmin=0, vmax=1)
    figure.colorbar(shown, ax=ax)
    ax.set_title(title)
    figure.tight_layout()
    save_figure(figure, path)
