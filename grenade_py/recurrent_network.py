"""RecurrentNetwork: Grenade's `RecurrentNetwork` — feed-forward and recurrent layers in one
typed list, run over sequences (grenade_py.recurrent_runner).

The recurrent layers' starting states (Grenade's `RecurrentInputs`) are their "state"
parameters: part of the model, learned, and saved with it.
"""
from __future__ import annotations

from grenade_py.errors import ShapeError
from grenade_py.layers import ConcatRecurrent, Layer, RecurrentCell, RecurrentLayer
from grenade_py.network import Network


class RecurrentNetwork(Network):
    """A Network whose layers may be recurrent (LSTM, BasicRecurrent, ConcatRecurrent).

    Built as a Network (`RecurrentNetwork(layers, input=D1(40), seed=...)`), its shapes checked
    the same way. It runs over sequences: `grenade_py.run_recurrent` (Grenade's runRecurrent),
    `grenade_py.train_recurrent` (trainRecurrent) and `train_sequences` (batches), not through
    run_net/train/fit.

    Feed-forward layers run on every step; a layer with parameters must give per-step
    gradients (FullyConnected, and lists or networks of such layers, do), since Grenade
    updates once per step. Recurrent layers sit at the top level of the list or in the
    branches of a ConcatRecurrent.
    """

    def check_layers(self) -> None:
        nodes = list(self.nodes(self.shapes[0]))
        by_path = {path: layer for path, layer, _ in nodes}
        for path, layer, _ in nodes[1:]:
            parent = by_path[path.rpartition(".")[0]]
            if isinstance(layer, RecurrentLayer) and not (
                    parent is self or isinstance(parent, ConcatRecurrent)):
                raise ShapeError(f"layer {path} ({layer!r}) is recurrent inside "
                                 f"{parent.label()}; a RecurrentNetwork takes recurrent layers "
                                 "at its top level or as branches of ConcatRecurrent")
        for path, layer, in_shape in nodes[1:]:
            has_parameters = any(node.parameter_shapes() for _, node, _ in layer.nodes(in_shape))
            if has_parameters and type(layer).factors is Layer.factors:
                raise ShapeError(
                    f"layer {path} ({layer!r}) has parameters but no per-step gradient form, "
                    "which a RecurrentNetwork's per-step updates need; use FullyConnected "
                    "layers between recurrent ones")

    def check_runnable(self) -> None:
        raise TypeError("a RecurrentNetwork runs over sequences: use run_recurrent, "
                        "train_recurrent or train_sequences (grenade_py.recurrent_runner)")

    def recurrent_layers(self) -> list[tuple[str, RecurrentCell]]:
        """The cells (the layers with a state of their own) in order, with their paths ("2",
        or "2.a" in the branch of a ConcatRecurrent)."""
        return [(path, layer) for path, layer, _ in self.nodes(self.shapes[0])
                if isinstance(layer, RecurrentCell)]

    def __repr__(self) -> str:
        return "Recurrent" + super().__repr__()
