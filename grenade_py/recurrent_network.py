"""RecurrentNetwork: Grenade's `RecurrentNetwork` — feed-forward and recurrent layers in one
typed list, run over sequences (grenade_py.recurrent_runner).

The recurrent layers' starting states (Grenade's `RecurrentInputs`) are their "state"
parameters: part of the model, learned, and saved with it.
"""
from __future__ import annotations

from grenade_py.errors import ShapeError
from grenade_py.layers import Layer, RecurrentLayer
from grenade_py.network import Network


class RecurrentNetwork(Network):
    """A Network whose layers may be recurrent (LSTM, BasicRecurrent).

    Built as a Network (`RecurrentNetwork(layers, input=D1(40), seed=...)`), its shapes checked
    the same way. It runs over sequences: `grenade_py.run_recurrent` (Grenade's runRecurrent),
    `grenade_py.train_recurrent` (trainRecurrent) and `train_sequences` (batches), not through
    run_net/train/fit.

    Feed-forward layers run on every step; a feed-forward layer with parameters must give
    per-step gradients (FullyConnected does), since Grenade updates once per step. Recurrent
    layers sit at the top level of the list, not inside branches.
    """

    def check_layers(self) -> None:
        nodes = list(self.nodes(self.shapes[0]))
        for path, layer, _ in nodes:
            if isinstance(layer, RecurrentLayer) and "." in path:
                raise ShapeError(f"layer {path} ({layer!r}) is recurrent inside a branch; a "
                                 "RecurrentNetwork takes recurrent layers at its top level")
        for path, layer, in_shape in nodes:
            if not path or "." in path or isinstance(layer, RecurrentLayer):
                continue
            has_parameters = any(node.parameter_shapes() for _, node, _ in layer.nodes(in_shape))
            if has_parameters and type(layer).factors is Layer.factors:
                raise ShapeError(
                    f"layer {path} ({layer!r}) has parameters but no per-step gradient form, "
                    "which a RecurrentNetwork's per-step updates need; use FullyConnected "
                    "layers between recurrent ones")

    def check_runnable(self) -> None:
        raise TypeError("a RecurrentNetwork runs over sequences: use run_recurrent, "
                        "train_recurrent or train_sequences (grenade_py.recurrent_runner)")

    def recurrent_layers(self) -> list[tuple[int, RecurrentLayer]]:
        """The recurrent layers with their indices in the list."""
        return [(index, layer) for index, layer in enumerate(self.layers)
                if isinstance(layer, RecurrentLayer)]

    def __repr__(self) -> str:
        return "Recurrent" + super().__repr__()
