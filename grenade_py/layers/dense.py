"""Dense: what the layers from D1 i to D1 o share (FullyConnected, LSTM, BasicRecurrent)."""
from __future__ import annotations

from typing import Any

from grenade_py.errors import ShapeError
from grenade_py.layers.arguments import chosen_init, positive_ints
from grenade_py.layers.base import Layer
from grenade_py.shapes import D1, Shape


class Dense(Layer):
    """A layer from D1 i to D1 o, built as `Kind(i, o)` (FullyConnected, LSTM,
    BasicRecurrent); `init` draws its parameters as that one of INITS says instead of as
    the network's `init`."""

    def __init__(self, i: int, o: int, init: str | None = None) -> None:
        super().__init__()
        positive_ints(type(self).__name__, i=i, o=o)
        self.i, self.o = int(i), int(o)
        self.init = chosen_init(type(self).__name__, init)

    def out_shape(self, in_shape: Shape) -> Shape:
        if in_shape != D1(self.i):
            raise ShapeError(f"takes D1 {self.i}")
        return D1(self.o)

    def takes(self) -> Shape:
        return D1(self.i)

    def spec(self) -> dict[str, Any]:
        own = {} if self.init is None else {"init": self.init}
        return {"type": type(self).__name__, "i": self.i, "o": self.o} | own

    def __repr__(self) -> str:
        return f"{type(self).__name__} {self.i} {self.o}"
