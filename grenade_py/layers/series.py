"""Series: layers run one after another — Grenade's `Network` without its input shape.

A Network is a Series with an input shape and flat parameter buffers; a plain list given as a
branch of Concat or Merge becomes a Series. Its per-batch buffers are the activations and deltas
between its layers (which the layers use as tapes) and its layers' own buffers.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, cast

import pyopencl.array as cl_array

from grenade_py.device import Device, Launch
from grenade_py.errors import ShapeError
from grenade_py.layers.base import Buffers, Factor, Layer, sub
from grenade_py.layers.batch_norm import BatchNorm
from grenade_py.layers.convolution import Convolution
from grenade_py.layers.fully_connected import FullyConnected
from grenade_py.layers.pad import Pad
from grenade_py.layers.relu import Relu
from grenade_py.shapes import Shape, size


class Series(Layer):
    """Layers in order; shape D_in -> D_out of the last layer.

    Ports the forward and backward folds of Grenade.Core.Network (runNetwork, runGradient).
    """

    def __init__(self, layers: Sequence[Layer]) -> None:
        super().__init__()
        if isinstance(layers, Layer):
            raise TypeError(f"layers must be a list of layers, got one ({layers!r}): pass "
                            "[layer, ...]")
        self.layers = list(layers)
        if not self.layers:
            raise ShapeError("a network needs at least one layer")
        for index, layer in enumerate(self.layers):
            if isinstance(layer, type) and issubclass(layer, Layer):
                raise TypeError(f"layer {index} is the class {layer.__name__}, not a layer: "
                                f"write {layer.__name__}(...)")
            if not isinstance(layer, Layer):
                raise TypeError(f"layer {index} is {layer!r}, not a grenade_py layer")
        for index, layer in enumerate(self.layers):  # past layers that keep any shape
            following = [later for later in self.layers[index + 1:] if not later.keeps_shape]
            layer.infer(following[0] if following else None)
        #: The shapes between the layers, input first (known once placed).
        self.shapes: list[Shape] = []

    def shape_list(self, in_shape: Shape) -> list[Shape]:
        """`in_shape`, then every layer's output shape; ShapeError names the failing layer
        (by its path through any branches) and both shapes."""
        shapes = [in_shape]
        for index, layer in enumerate(self.layers):
            try:
                shapes.append(layer.out_shape(shapes[-1]))
            except ShapeError as e:
                where = f"layer {index} ({layer.label()})"
                if e.located:
                    raise ShapeError(f"{where} {e}", located=True) from None
                takes, hint = layer.takes(), ""
                if takes is not None and type(takes) is not type(shapes[-1]) and \
                        size(takes) == size(shapes[-1]):
                    hint = (f": put a Reshape() before it to give it the same {size(takes)} "
                            f"values as {takes!r}")
                raise ShapeError(f"{where} {e}, but its input is {shapes[-1]!r}{hint}",
                                 located=True) from None
        return shapes

    def out_shape(self, in_shape: Shape) -> Shape:
        return self.shape_list(in_shape)[-1]

    def children(self, in_shape: Shape) -> list[tuple[str, Layer, Shape]]:
        shapes = self.shape_list(in_shape)
        return [(str(i), layer, shape) for i, (layer, shape)
                in enumerate(zip(self.layers, shapes, strict=False))]

    def bind(self, device: Device, in_shape: Shape, owner: object) -> None:
        super().bind(device, in_shape, owner)
        self.shapes = self.shape_list(in_shape)

    def spec(self) -> dict[str, Any]:
        return {"type": type(self).__name__, "layers": [layer.spec() for layer in self.layers]}

    def __repr__(self) -> str:
        return f"[{', '.join(repr(layer) for layer in self.layers)}]"

    def label(self) -> str:
        return type(self).__name__

    # -- running (a batch of n rows is one step of n sequences) -------------------------------
    def batch_buffers(self, n: int) -> dict[str, tuple[int, ...]]:
        return self.sequence_buffers(1, n)

    def base(self, k: int) -> int:
        """The boundary whose buffers boundary k's are: k, or below a Reshape (`renames`)
        that is neither the first layer (its input is given, its delta may be none) nor one of
        the last two (their boundaries take a loss's delta), the Reshape's input's; such a
        Reshape launches nothing (forward_sequence, backward_below skip it)."""
        while 2 <= k <= len(self.layers) - 2 and self.layers[k - 1].renames:
            k -= 1
        return k

    def boundary(self, buffers: Buffers, kind: str, k: int) -> cl_array.Array:
        """Buffer `kind` ("a" or "d") of boundary k, shaped as that boundary (see `base`)."""
        at = buffers[f"{kind}{self.base(k)}"]
        return at if self.base(k) == k else at.reshape(at.shape[0], *self.shapes[k].dims)

    def sequence_buffers(self, steps: int, batch: int) -> dict[str, tuple[int, ...]]:
        """The activations and deltas between the layers, over steps x batch rows, and the
        layers' own buffers (a recurrent layer's for the sequences), named `i.name`."""
        inner = {f"{kind}{k}": (steps * batch, *self.shapes[k].dims)
                 for k in range(1, len(self.layers)) if self.base(k) == k for kind in ("a", "d")}
        return inner | {f"{i}.{name}": shape for i, layer in enumerate(self.layers)
                        for name, shape in layer.sequence_buffers(steps, batch).items()}

    def inference_buffers(self, n: int) -> dict[str, tuple[int, ...]]:
        """The activations between the layers (no deltas) and the layers' own."""
        inner = {f"a{k}": (n, *self.shapes[k].dims) for k in range(1, len(self.layers))
                 if self.base(k) == k}  # (a Reshape's output: its input's buffer)
        return inner | self.child_buffers(n, inference=True)

    def activations(self, x: cl_array.Array, y: cl_array.Array,
                    buffers: Buffers) -> list[cl_array.Array]:
        """The buffers at every boundary, x first and y last."""
        return [x] + [self.boundary(buffers, "a", k) for k in range(1, len(self.layers))] + [y]

    def forward(self, n: int, x: cl_array.Array, y: cl_array.Array, buffers: Buffers,
                training: bool) -> list[Launch]:
        return self.forward_sequence(1, n, x, y, buffers, training)

    def joins_rows(self) -> bool:
        """As the last layer's, which writes y and reads dy (`Layer.joins_rows`)."""
        return self.layers[-1].joins_rows()

    def relu_fused(self, i: int, relu: int, rows: int) -> FullyConnected | BatchNorm | None:
        """Layer i if it runs the Relu at index `relu` in its launches over `rows` rows: a
        FullyConnected layer, the next layer's or the one before's (FullyConnected.relu_fused);
        a BatchNorm, the next layer's (its backward pass too, in `backward_below`, unless the
        layer after that runs it); else None."""
        layer = self.layers[i]
        if not (0 <= relu < len(self.layers) and type(self.layers[relu]) is Relu):
            return None
        if isinstance(layer, FullyConnected) and layer.relu_fused(rows):
            return layer
        return layer if type(layer) is BatchNorm and relu == i + 1 else None

    def setup(self, n: int, buffers: Buffers) -> list[Launch]:
        """The layers' setups; a Convolution's after a Pad (`pad_fused`) takes the turned
        convolution's offsets over that Pad's input."""
        return super().setup(n, buffers) + [
            launch for i in range(len(self.layers)) if (conv := self.pad_fused(i)) is not None
            for launch in conv.turned_offsets(sub(buffers, str(i)),
                                              cast(Pad, self.layers[i - 1]))]

    def pad_fused(self, i: int) -> Convolution | None:
        """Layer i if it is a Convolution after a Pad whose input delta it computes as the
        turned convolution (`Convolution.flips`): then it gives the Pad's input's delta, the
        Pad's backward pass left out (`backward_below`), else None."""
        layer = self.layers[i]
        fused = type(layer) is Convolution and i > 0 and type(self.layers[i - 1]) is Pad and \
            layer.flips()
        return cast(Convolution, layer) if fused else None

    def forward_sequence(self, steps: int, batch: int, x: cl_array.Array, y: cl_array.Array,
                         buffers: Buffers, training: bool) -> list[Launch]:
        acts, rows = self.activations(x, y, buffers), steps * batch
        launches = []
        for i, layer in enumerate(self.layers):
            own = sub(buffers, str(i))
            if (fc := self.relu_fused(i, i + 1, rows)) is not None:
                launches += fc.forward(rows, acts[i], acts[i + 1], own, training, acts[i + 2])
            elif (i == 0 or self.relu_fused(i - 1, i, rows) is None) and self.base(i + 1) > i:
                launches += layer.forward_sequence(steps, batch, acts[i], acts[i + 1], own,
                                                   training)
        return launches

    def backward(self, n: int, x: cl_array.Array, y: cl_array.Array, dy: cl_array.Array,
                 dx: cl_array.Array | None, buffers: Buffers) -> list[Launch]:
        return self.backward_below(len(self.layers), 1, n, x, y, dy, dx, buffers)

    def backward_sequence(self, steps: int, batch: int, x: cl_array.Array, y: cl_array.Array,
                          dy: cl_array.Array, dx: cl_array.Array | None, buffers: Buffers,
                          gradients: bool = True) -> list[Launch]:
        return self.backward_below(len(self.layers), steps, batch, x, y, dy, dx, buffers,
                                   gradients)

    def factors(self, steps: int, batch: int, x: cl_array.Array, y: cl_array.Array,
                dy: cl_array.Array, buffers: Buffers) -> list[Factor] | None:
        """Every layer's per-row factors, named by path ("0.weights"); None if a layer has
        none."""
        acts = self.activations(x, y, buffers)
        deltas = [self.boundary(buffers, "d", k) for k in range(1, len(self.layers))] + [dy]
        found = []
        for i, layer in enumerate(self.layers):
            factors = layer.factors(steps, batch, acts[i], acts[i + 1], deltas[i],
                                    sub(buffers, str(i)))
            if factors is None:
                return None
            found += [dataclasses.replace(f, name=f"{i}.{f.name}") for f in factors]
        return found

    def lowest(self, top: int) -> int:
        """The lowest layer below `top` with parameters (top if none): without an input
        delta, the backward pass starts there, and computes none for it (`backward_below`)."""
        return next((i for i, layer in enumerate(self.layers[:top]) if layer.trainable()), top)

    def update_fused(self, top: int, rows: int) -> list[FullyConnected]:
        """The layers below `top` whose weights take the optimiser's step in their gradient's
        GEMM over `rows` rows (`backward_below`'s `stepped`; FullyConnected.update_fused)."""
        return [layer for layer in self.layers[:top]
                if isinstance(layer, FullyConnected) and layer.update_fused(rows)]

    def backward_below(self, top: int, steps: int, batch: int, x: cl_array.Array,
                       y: cl_array.Array, dy: cl_array.Array, dx: cl_array.Array | None,
                       buffers: Buffers, gradients: bool = True,
                       stepped: Sequence[Layer] = ()) -> list[Launch]:
        """The backward pass (through time) of layers top - 1 .. 0, from `dy`, the delta at
        boundary `top` (the output when top is the layer count; the loss may start lower, as
        cross entropy starts at the logits); `gradients` as in Layer.backward_sequence. Without
        `dx`, the layers below the lowest with parameters are left out, and that one computes
        no input delta (as the fused loop does). A Relu below a FullyConnected layer that runs
        it (`relu_fused`) runs in that layer's input delta, and one above a BatchNorm (unless
        a FullyConnected layer above it runs it) in the BatchNorm's backward kernels; a Pad
        below a Convolution that gives the Pad's input delta (`pad_fused`) runs none. The
        layers `stepped` (of `update_fused`) step their weights in their gradients' GEMMs (the
        values set per call)."""
        acts = self.activations(x, y, buffers)
        lowest = 0 if dx is not None else self.lowest(top)
        deltas: list[cl_array.Array | None] = [dx] + [
            self.boundary(buffers, "d", k) for k in range(1, len(self.layers))] + [None]
        deltas[top] = dy
        if dx is None and lowest < top:
            deltas[lowest] = None  # nothing below it wants its input's delta
        launches, rows = [], steps * batch
        fused: list[Layer | None] = [self.relu_fused(i, i - 1, rows) or self.pad_fused(i)
                                     if lowest < i < top else None for i in range(top + 1)]
        above = [i + 1 < top and fused[i + 2] is None and
                 isinstance(self.relu_fused(i, i + 1, rows), BatchNorm) for i in range(top)]
        updated = {id(layer) for layer in stepped}
        for i in reversed(range(lowest, top)):
            delta, own, joint, layer = (deltas[i + 1], sub(buffers, str(i)), fused[i],
                                        self.layers[i])
            assert delta is not None  # only dx may be None
            steps_in = {"update": True} if id(layer) in updated else {}
            if i > 0 and above[i - 1]:
                continue  # a Relu that the BatchNorm below runs backwards
            if above[i]:  # from the Relu's output delta
                relu_delta = deltas[i + 2]
                assert relu_delta is not None
                launches += cast(BatchNorm, layer).backward(rows, acts[i], acts[i + 1],
                                                            relu_delta, deltas[i], own,
                                                            relu=acts[i + 2])
            elif isinstance(joint, Convolution):  # the Pad's input delta
                launches += joint.backward(rows, acts[i], acts[i + 1], delta, deltas[i - 1],
                                           own, below=cast(Pad, self.layers[i - 1]))
            elif isinstance(joint, FullyConnected):  # its input delta through the Relu below
                launches += joint.backward_sequence(steps, batch, acts[i], acts[i + 1], delta,
                                                    deltas[i - 1], own, gradients, acts[i],
                                                    **steps_in)  # (masked by the Relu's output)
            elif (i + 1 == top or fused[i + 1] is None) and self.base(i + 1) > i:
                launches += layer.backward_sequence(steps, batch, acts[i], acts[i + 1], delta,
                                                    deltas[i], own, gradients, **steps_in)
        return launches
