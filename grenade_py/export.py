"""`python -m grenade_py.export MODEL_FILE OUT.onnx`: a model file (what the CLIs' --save and
Network.save write) as an ONNX model (see Network.to_onnx)."""
from __future__ import annotations

import click

from grenade_py.cli import check_writable, user_errors
from grenade_py.errors import ModelFileError
from grenade_py.network import Network
from grenade_py.onnx_export import OPSET
from grenade_py.recurrent_network import RecurrentNetwork


def load_any(path: str) -> Network:
    """The Network or RecurrentNetwork the model file at `path` holds."""
    try:
        return Network.load(path)
    except ModelFileError as e:
        if "holds a RecurrentNetwork" not in str(e):
            raise
    return RecurrentNetwork.load(path)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model_file", type=click.Path(dir_okay=False))
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--steps", type=click.IntRange(min=1), default=None,
              help="For a recurrent network: the sequence length the graph runs over.")
def main(model_file: str, out: str, steps: int | None) -> None:
    """Write MODEL_FILE's network to OUT as an ONNX model, checked by onnx.checker."""
    check_writable(out, "OUT")
    with user_errors():
        net = load_any(model_file)
        recurrent = isinstance(net, RecurrentNetwork)
        if recurrent and steps is None:
            raise click.UsageError("a recurrent network runs over a fixed number of steps in "
                                   "ONNX: give --steps T")
        if not recurrent and steps is not None:
            raise click.UsageError("--steps is for recurrent networks")
        net.to_onnx(out, steps)
    click.echo(f"wrote {out} (ONNX opset {OPSET}): {net!r}")


if __name__ == "__main__":
    main()
