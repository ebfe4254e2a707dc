"""What every layer is: Grenade's `Layer` and `UpdateLayer` classes, on an OpenCL device.

A layer says which input shape it takes and what it gives (`out_shape`), the parameters it starts
from (`initial_parameters`) and the device buffers it needs per batch of n (`batch_buffers`: a
tape, scratch). Once a Network places it, its `parameters`, `momentum` and `gradients` are views
into the network's flat buffers, and it hands the runner `Launch`es (kernels with their arguments
set once) for a batch size and the buffers around it. The update is the network's: one launch over
the flat buffers. A composite layer (Series, Concat, Merge, a nested Network) lists its
`children`; its parameters are theirs, keyed by path ("a.0.weights").
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyopencl.array as cl_array

from grenade_py.device import Device, Launch
from grenade_py.shapes import Shape

#: A layer's per-batch device buffers, by name.
Buffers = dict[str, cl_array.Array]


@dataclass(frozen=True)
class Factor:
    """The per-row gradient of parameter `name`: row k's is d[k * ldd + r] * x[k * ldx + c]
    for element (r, c); x None means a vector parameter (its gradient is d itself). `decay`:
    whether the L2 term applies (Grenade leaves BasicRecurrent's bias undecayed). `deltas`:
    which factor holds the deltas, "d" or "x" (the other holds activations); clipping scales
    that one."""

    name: str
    d: cl_array.Array
    ldd: int
    x: cl_array.Array | None = None
    ldx: int = 0
    decay: bool = True
    deltas: str = "d"


@dataclass(frozen=True)
class WindowForm:
    """A layer's part of the fused window loop (grenade_py.windows): OpenCL statements over one
    window of T steps. The loop names boundary k's activations a{k} and deltas d{k} (T rows of
    n{k} values each), the optimisers `opt` (the parameters', at the window's first step) and
    `sopt` (the starting states'), `decay`, `one` (a pointer to 1: a vector's other factor),
    `lid` and `nl` (lane index and count). `args`: kernel arguments as (C declaration, value);
    `scratch`: buffers of the loop's own, by name, as (values per step, values besides);
    `forward` computes a{i+1} from a{i}; `backward` d{i} from d{i+1} (if asked for) and what
    `update` needs; `update` applies the window's per-step gradients in time order."""

    args: list[tuple[str, Any]]
    scratch: dict[str, tuple[int, int]]
    forward: str
    backward: str
    update: str


def over_rows(i: int, code: str) -> str:
    """Per-example fused-loop `code` of layer i, whose loops run over n{i} values, run over the
    T rows of a window instead (an element-wise layer's)."""
    return f"{{ const int rows{i} = T * n{i}; {{ const int n{i} = rows{i};\n{code}\n}} }}"


def sub(buffers: Buffers, key: str) -> Buffers:
    """The buffers of child `key` of a composite layer (their names start with `key.`)."""
    prefix = key + "."
    return {k[len(prefix):]: v for k, v in buffers.items() if k.startswith(prefix)}


class Layer:
    """A layer without parameters; subclasses with parameters give `initial_parameters`.

    Tape: the runner keeps every activation of a batch on the device, so a layer's tape is the
    input or output buffer it chooses (`tape`), never a copy; anything else it must keep (a
    pooling argmax, a dropout mask) is a per-batch buffer it declares in `batch_buffers`.
    """

    #: Which activation the backward pass reads: "input" or "output".
    tape = "input"
    #: Whether the layer gives any input shape back unchanged (activations, Trivial).
    keeps_shape = False
    #: Whether its output is its input's values under another shape (Reshape): between two
    #: layers of a Series the two boundaries share one buffer (Series.base), with no copy.
    renames = False

    def __init__(self) -> None:
        self._device: Device | None = None
        self._in_shape: Shape | None = None
        #: The token of the network whose flat buffers hold the layer's values (None: unplaced).
        #: A token, not the network: a layer knows no network.
        self._owner: object | None = None
        self.parameters: dict[str, cl_array.Array] = {}
        self.momentum: dict[str, cl_array.Array] = {}
        self.second: dict[str, cl_array.Array] = {}
        self.gradients: dict[str, cl_array.Array] = {}
        #: The layer's own initialisation (one of INITS), or None: the network's.
        self.init: str | None = None

    def __reduce_ex__(self, protocol: Any) -> Any:
        if self._owner is not None:
            raise TypeError(f"{self!r} is placed in a network, whose buffers hold its values: "
                            "copy the network (copy.deepcopy(net)), or build a new layer")
        return super().__reduce_ex__(protocol)

    # -- shapes and description ------------------------------------------------------------
    def out_shape(self, in_shape: Shape) -> Shape:
        """The output shape for `in_shape`; raises ShapeError saying what the layer takes."""
        raise NotImplementedError

    def spec(self) -> dict[str, Any]:
        """The layer's type and constructor arguments, as stored in model files."""
        return {"type": type(self).__name__}

    @classmethod
    def from_arguments(cls, **arguments: Any) -> Layer:
        """The layer a spec's arguments describe (the inverse of `spec`)."""
        return cls(**arguments)

    def takes(self) -> Shape | None:
        """The one input shape this layer takes, if it takes one (a Reshape before it infers
        its output shape from this)."""
        return None

    def infer(self, following: Layer | None) -> None:
        """Settle what the layer can only know from the layer after it (see Reshape)."""

    def __repr__(self) -> str:
        return type(self).__name__

    def label(self) -> str:
        """How shape errors name the layer: its repr, or a composite's type alone."""
        return repr(self)

    def children(self, in_shape: Shape) -> list[tuple[str, Layer, Shape]]:
        """A composite layer's parts as (key, layer, that layer's input shape)."""
        return []

    def trainable(self) -> bool:
        """Whether the layer, or a layer inside it, has parameters."""
        return any(node.parameter_shapes() for _, node, _ in self.nodes(self.in_shape))

    def nodes(self, in_shape: Shape, path: str = "") -> Iterator[tuple[str, Layer, Shape]]:
        """This layer and every layer inside it, parents first, as (path, layer, input shape)."""
        yield path, self, in_shape
        for key, child, child_in in self.children(in_shape):
            yield from child.nodes(child_in, f"{path}.{key}" if path else key)

    # -- device side --------------------------------------------------------------------
    @property
    def device(self) -> Device:
        """The device of the network the layer was placed in."""
        if self._device is None:
            raise RuntimeError(f"{self!r} is not part of a network yet")
        return self._device

    @property
    def in_shape(self) -> Shape:
        """The shape of one input sample, known once the layer is placed in a network."""
        if self._in_shape is None:
            raise RuntimeError(f"{self!r} is not part of a network yet")
        return self._in_shape

    def bind(self, device: Device, in_shape: Shape, owner: object) -> None:
        """Record where the layer now lives: its device, input shape and the token of the
        network that placed it (called by that network)."""
        self._device, self._in_shape, self._owner = device, in_shape, owner

    def draw(self, rng: np.random.Generator) -> None:
        """Draw what the layer needs from the network's seed besides parameters (a Dropout's
        key); called for every layer in order when the network is placed."""

    def get_state(self) -> dict[str, Any]:
        """What the layer keeps besides parameters that a resumed run needs (a Dropout's key
        and step counter), as JSON values; saved in model files."""
        return {}

    def set_state(self, state: Any) -> None:
        """Restore what `get_state` gave (None: the file had none); ValueError if malformed."""

    def parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        """The shape of each parameter array, by name; none by default."""
        return {}

    def initial_parameters(self, rng: np.random.Generator, init: str) -> dict[str, np.ndarray]:
        """Freshly drawn parameters, shaped as `parameter_shapes` (`init` is one of INITS)."""
        return {}

    def child_buffers(self, n: int, inference: bool = False) -> dict[str, tuple[int, ...]]:
        """The per-batch buffers of a composite's children (with `inference`, only those the
        forward pass outside training needs), named `key.name`."""
        return {f"{key}.{name}": shape for key, child, _ in self.children(self.in_shape)
                for name, shape in (child.inference_buffers(n) if inference
                                    else child.batch_buffers(n)).items()}

    def batch_buffers(self, n: int) -> dict[str, tuple[int, ...]]:
        """Shapes of the device buffers this layer needs for a batch of `n`, by name; they are
        allocated once per batch size by whoever runs the network."""
        return {}

    def inference_buffers(self, n: int) -> dict[str, tuple[int, ...]]:
        """Those of `batch_buffers` that the forward pass outside training (run_net, evaluate)
        uses: by default all of them; a layer whose other buffers serve training or the
        backward pass alone leaves those out."""
        return self.batch_buffers(n)

    def setup(self, n: int, buffers: Buffers) -> list[Launch]:
        """Launches filling the per-batch buffers once, when they are allocated (a
        convolution's map of patch offsets); a composite's are its children's."""
        return [launch for key, child, _ in self.children(self.in_shape)
                for launch in child.setup(n, sub(buffers, key))]

    def forward(self, n: int, x: cl_array.Array, y: cl_array.Array, buffers: Buffers,
                training: bool) -> list[Launch]:
        """Launches computing y (n, *out) from x (n, *in); `training` is True inside
        `train`/`fit` and False in `run_net`/`evaluate`."""
        raise NotImplementedError

    def backward(self, n: int, x: cl_array.Array, y: cl_array.Array, dy: cl_array.Array,
                 dx: cl_array.Array | None, buffers: Buffers) -> list[Launch]:
        """Launches writing the parameter gradients (summed over the batch) and, unless `dx` is
        None, the input delta dx from the output delta dy."""
        raise NotImplementedError

    def joins_rows(self) -> bool:
        """Whether `forward` may be given as y, and `backward` as y and dy, a view of some
        columns of a wider buffer's rows (`device.columns`; a Concat joins such a branch's
        output in place, and its delta is read there): the layer's launches that write y or
        read dy then take their rows' layout (`device.rows`). Otherwise they are buffers of
        their own."""
        return False

    def delta_buffers(self) -> set[str]:
        """The names of the `batch_buffers` that only the input delta uses: a Step whose
        lowest layer with parameters computes none leaves them out of that layer's."""
        return set()

    def sequence_buffers(self, steps: int, batch: int) -> dict[str, tuple[int, ...]]:
        """The buffers for `batch` sequences of `steps` (rows time-major): a feed-forward
        layer's for steps x batch rows; a recurrent layer's hold its states too."""
        return self.batch_buffers(steps * batch)

    def forward_sequence(self, steps: int, batch: int, x: cl_array.Array, y: cl_array.Array,
                         buffers: Buffers, training: bool) -> list[Launch]:
        """`forward` over the rows of `batch` sequences of `steps`; a recurrent layer runs
        through time."""
        return self.forward(steps * batch, x, y, buffers, training)

    def backward_sequence(self, steps: int, batch: int, x: cl_array.Array, y: cl_array.Array,
                          dy: cl_array.Array, dx: cl_array.Array | None, buffers: Buffers,
                          gradients: bool = True) -> list[Launch]:
        """`backward` over the rows of `batch` sequences of `steps`; a recurrent layer runs
        backwards through time. Without `gradients` (a RecurrentNetwork's pass: its update
        takes them from `factors`) a layer may leave its parameters' gradients unwritten."""
        return self.backward(steps * batch, x, y, dy, dx, buffers)

    def factors(self, steps: int, batch: int, x: cl_array.Array, y: cl_array.Array,
                dy: cl_array.Array, buffers: Buffers) -> list[Factor] | None:
        """Each parameter's per-row gradient factors after `backward` over rows = steps * batch
        (a RecurrentNetwork updates from them, one step at a time); None where the layer has
        parameters but no such form, which a RecurrentNetwork then refuses."""
        return None if self.parameters or self.parameter_shapes() else []

    # -- device-side form, for the fused per-example loop (grenade_py.fused) -------------------
    # The loop's code names activations a{k}, deltas d{k} and sizes n{k} at boundary k (layer i
    # reads boundary i, writes i + 1); `lid` and `nl` are the lane index and lane count, and
    # `opt` the optimiser at this example's step and `decay` its l2 / weight decay, for
    # `optimizer_at` (kernels/optimizers.cl). A layer without these (None) makes the
    # runner fall back to the layer-by-layer path.
    def fused_args(self, i: int) -> list[tuple[str, Any]]:
        """Extra kernel arguments as (C declaration, value): the layer's buffers (device
        arrays) or scalars (numpy scalars of the kernel's type)."""
        return []

    def fused_scratch(self) -> int:
        """Values of memory of its own (s{i}, one example's) the layer's fused forms use."""
        return 0

    def fused_forward(self, i: int) -> str | None:
        """OpenCL statements computing a{i+1} from a{i} for one example."""
        return None

    def fused_backward(self, i: int, input_delta: bool) -> str | None:
        """OpenCL statements computing d{i} (if input_delta) from d{i+1}, then updating the
        layer's parameters, for one example. Each statement group ends at a barrier."""
        return None

    def window_form(self, i: int, input_delta: bool) -> WindowForm | None:
        """The layer as layer i of the fused window loop (see WindowForm), or None: a
        RecurrentNetwork with such a layer trains layer by layer."""
        return None
