"""ONNX export: a Network or RecurrentNetwork as an ONNX graph (opset OPSET) that ONNX Runtime
runs as `run_net`/`run_recurrent` do (inference: BatchNorm by its running statistics, Dropout
the identity).

Needs the `onnx` package (pip install onnx: the [onnx] extra). Layouts: a batch of D1 is (N, n), D2
(N, rows, cols), D3 (N, channels, rows, cols), as grenade_py's; Convolution's K becomes ONNX's
(F, C, kh, kw) weight, Deconvolution's ConvTranspose's (C, F, kh, kw). Max pooling picks the
same values as ONNX's MaxPool (which of two equal values wins only matters to the gradient).
Gelu, LeakyTanh and the recurrent cells are written as the ops they are made of (Grenade's LSTM
is not ONNX's LSTM op: no recurrent term in its cell input, output o * c without tanh). A
recurrent network is unrolled over a sequence length fixed at export: input (N, T, *in), output
(N, T, *out), and each cell's state after the last step as an output; the learned starting
states are its initial values. The model's metadata holds the network's spec (`grenade_py.spec`)
and every initializer is named by its layer's path, so `grenade_py.onnx_import` rebuilds the
same network.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any

import numpy as np

from grenade_py.errors import GrenadeError
from grenade_py.layers import Layer, RecurrentCell
from grenade_py.model_file import write_atomically
from grenade_py.shapes import D2, Shape

#: The ONNX opset the graphs are written for (ONNX 1.13+, ONNX Runtime 1.14+).
OPSET = 18


def _onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise GrenadeError("ONNX export needs the onnx package: pip install onnx (the "
                           "[onnx] extra)") from None
    return onnx


class Graph:
    """The nodes and initializers of a graph being written, in one precision."""

    def __init__(self, dtype: type) -> None:
        self.onnx = _onnx()
        self.dtype: np.dtype[Any] = np.dtype(dtype)
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.names: set[str] = set()
        self.read: dict[int, dict[str, np.ndarray]] = {}

    def values(self, layer: Layer) -> dict[str, np.ndarray]:
        """Host copies of `layer`'s parameters, read from the device once per graph (a
        recurrent network's layers appear once per step)."""
        if id(layer) not in self.read:
            self.read[id(layer)] = {k: v.get() for k, v in layer.parameters.items()}
        return self.read[id(layer)]

    def fresh(self, hint: str) -> str:
        name, k = hint, 1
        while name in self.names:
            name, k = f"{hint}_{k}", k + 1
        self.names.add(name)
        return name

    def constant(self, hint: str, value: Any, dtype: Any = None) -> str:
        """An initializer holding `value` (in the graph's precision unless `dtype`)."""
        name = self.fresh(hint)
        array = np.asarray(value, dtype=dtype or self.dtype)
        self.initializers.append(self.onnx.numpy_helper.from_array(array, name))
        return name

    def parameter(self, name: str, value: Any) -> str:
        """The initializer `name` (a layer's path and parameter), made on first use."""
        if name not in self.names:
            self.names.add(name)
            array = np.asarray(value, dtype=self.dtype)
            self.initializers.append(self.onnx.numpy_helper.from_array(array, name))
        return name

    def ints(self, hint: str, values: Any) -> str:
        return self.constant(hint, values, np.int64)

    def node(self, op: str, inputs: list[str], hint: str, **attributes: Any) -> str:
        out = self.fresh(hint)
        self.nodes.append(self.onnx.helper.make_node(op, inputs, [out], name=out, **attributes))
        return out


def _four(g: Graph, x: str, shape: Shape, hint: str) -> str:
    """x as (N, C, H, W): a D2 batch gets its channel axis."""
    return g.node("Unsqueeze", [x, g.ints(f"{hint}.axis", [1])], f"{hint}.planes") \
        if isinstance(shape, D2) else x


def _back(g: Graph, y: str, shape: Shape, hint: str) -> str:
    """A (N, C, H, W) result as `shape` gives it: D2 drops the channel axis."""
    return g.node("Squeeze", [y, g.ints(f"{hint}.axis", [1])], hint) \
        if isinstance(shape, D2) else y


def export_layer(g: Graph, layer: Layer, x: str, in_shape: Shape, path: str) -> str:
    """Nodes computing `layer` on x (a batch of in_shape) for inference; the output's name.
    Initializers are named `{path}.{parameter}`."""
    kind, out_shape = type(layer).__name__, layer.out_shape(in_shape)
    p = g.values(layer)
    simple = {"Tanh": "Tanh", "Relu": "Relu", "Logit": "Sigmoid", "Sinusoid": "Sin",
              "Trivial": "Identity", "Dropout": "Identity"}
    if kind in simple:
        return g.node(simple[kind], [x], path)
    if kind == "Elu":
        return g.node("Elu", [x], path, alpha=1.0)
    if kind == "Softmax":
        return g.node("Softmax", [x], path, axis=1)
    if kind == "LeakyRelu":
        return g.node("LeakyRelu", [x], path, alpha=layer.alpha)  # type: ignore[attr-defined]
    if kind == "LeakyTanh":  # clip + 0.05 (x - clip)
        m = layer.maximum  # type: ignore[attr-defined]
        clipped = g.node("Clip", [x, g.constant(f"{path}.low", -m), g.constant(f"{path}.high", m)],
                         f"{path}.clip")
        beyond = g.node("Sub", [x, clipped], f"{path}.beyond")
        return g.node("Add", [clipped, g.node("Mul", [beyond, g.constant(f"{path}.slope", 0.05)],
                                              f"{path}.scaled")], path)
    if kind == "Gelu":
        if layer.approximate:  # type: ignore[attr-defined]
            gate = g.node("Sigmoid", [g.node("Mul", [x, g.constant(f"{path}.k", 1.702)],
                                             f"{path}.kx")], f"{path}.gate")
            return g.node("Mul", [x, gate], path)
        erf = g.node("Erf", [g.node("Mul", [x, g.constant(f"{path}.k", 1 / math.sqrt(2))],
                                    f"{path}.scaled")], f"{path}.erf")
        half = g.node("Mul", [x, g.constant(f"{path}.half", 0.5)], f"{path}.half_x")
        return g.node("Mul", [half, g.node("Add", [erf, g.constant(f"{path}.one", 1.0)],
                                           f"{path}.one_plus")], path)
    if kind == "FullyConnected":
        return g.node("Gemm", [x, g.parameter(f"{path}.weights", p["weights"]),
                               g.parameter(f"{path}.bias", p["bias"])], path, transB=1)
    if kind == "Reshape":
        return g.node("Reshape", [x, g.ints(f"{path}.shape", [0, *out_shape.dims])], path)
    if kind == "BatchNorm":
        state = layer.get_state()
        return g.node("BatchNormalization", [
            x, g.parameter(f"{path}.gamma", p["gamma"]), g.parameter(f"{path}.beta", p["beta"]),
            g.parameter(f"{path}.running_mean", state["running_mean"]),
            g.parameter(f"{path}.running_var", state["running_var"])], path,
            epsilon=layer.eps)  # type: ignore[attr-defined]
    if kind in ("Convolution", "Deconvolution", "Pooling"):
        kh, kw, sh, sw = (getattr(layer, a) for a in ("kh", "kw", "sh", "sw"))
        planes = _four(g, x, in_shape, path)
        geometry = {"kernel_shape": [kh, kw], "strides": [sh, sw]}
        if kind == "Pooling":
            y = g.node("MaxPool", [planes], f"{path}.pool", **geometry)
        else:
            kernel = p["kernel"].T  # (F, C kh kw) or, transposed, (C, F kh kw)
            weight = kernel.reshape(kernel.shape[0], -1, kh, kw)
            op = "Conv" if kind == "Convolution" else "ConvTranspose"
            y = g.node(op, [planes, g.parameter(f"{path}.kernel", weight)], f"{path}.conv",
                       **geometry)
        return _back(g, y, out_shape, path)
    if kind in ("Pad", "Crop"):
        left, top, right, bottom = (getattr(layer, a) for a in ("left", "top", "right",
                                                                "bottom"))
        planes = _four(g, x, in_shape, path)
        if kind == "Pad":
            y = g.node("Pad", [planes, g.ints(f"{path}.pads", [0, 0, top, left, 0, 0, bottom,
                                                               right])], f"{path}.pad")
        else:
            dims = in_shape.dims[-2:]
            y = g.node("Slice", [planes, g.ints(f"{path}.starts", [top, left]),
                                 g.ints(f"{path}.ends", [dims[0] - bottom, dims[1] - right]),
                                 g.ints(f"{path}.axes", [2, 3])], f"{path}.crop")
        return _back(g, y, out_shape, path)
    if kind in ("Series", "Network"):
        for key, child, child_in in layer.children(in_shape):
            x = export_layer(g, child, x, child_in, f"{path}.{key}" if path else key)
        return x
    if kind in ("Concat", "Merge"):
        ya, yb = (export_layer(g, child, x, child_in, f"{path}.{key}")
                  for key, child, child_in in layer.children(in_shape))
        if kind == "Merge":
            return g.node("Add", [ya, yb], path)
        if isinstance(out_shape, D2):  # stacked: two D1 rows
            axis = g.ints(f"{path}.axis", [1])
            ya, yb = (g.node("Unsqueeze", [y, axis], f"{path}.{k}.row")
                      for k, y in (("a", ya), ("b", yb)))
        return g.node("Concat", [ya, yb], path, axis=1)
    raise GrenadeError(f"{layer!r} (layer {path}) has no ONNX form here")


def _cell_step(g: Graph, cell: RecurrentCell, x: str, state: str, path: str, t: int
               ) -> tuple[str, str]:
    """One step of Grenade's LSTM or BasicRecurrent: (next state, output)."""
    o, at = cell.o, f"{path}.t{t}"
    if type(cell).__name__ == "LSTM":
        w, u, b = (f"{path}.{name}" for name in ("w", "u", "b"))
        gates = g.node("Add", [g.node("MatMul", [x, w], f"{at}.wx"), b], f"{at}.gates")
        recurrent = g.node("MatMul", [state, u], f"{at}.uc")
        parts = [g.node("Slice", [gates, g.ints(f"{at}.s{k}", [k * o]),
                                  g.ints(f"{at}.e{k}", [(k + 1) * o]), g.ints(f"{at}.a{k}", [1])],
                        f"{at}.gate{k}") for k in range(4)]
        sigmoids = [g.node("Sigmoid", [g.node("Add", [parts[k], g.node("Slice", [
            recurrent, g.ints(f"{at}.us{k}", [k * o]), g.ints(f"{at}.ue{k}", [(k + 1) * o]),
            g.ints(f"{at}.ua{k}", [1])], f"{at}.u{k}")], f"{at}.sum{k}")], f"{at}.sigma{k}")
            for k in range(3)]
        f, i, out = sigmoids
        cell_in = g.node("Tanh", [parts[3]], f"{at}.cell_in")
        c = g.node("Add", [g.node("Mul", [f, state], f"{at}.keep"),
                           g.node("Mul", [i, cell_in], f"{at}.write")], f"{at}.cell")
        return c, g.node("Mul", [out, c], f"{at}.h")
    # BasicRecurrent: y = b + W [x; y-], as W_x x + W_y y- (the state has no batch axis at first)
    wx, wy, b = (f"{path}.{name}" for name in ("w_x", "w_y", "b"))
    y = g.node("Add", [g.node("Add", [g.node("MatMul", [x, wx], f"{at}.wx"),
                                      g.node("MatMul", [state, wy], f"{at}.wy")], f"{at}.sum"),
                       b], f"{at}.y")
    return y, y


def _recurrent_parameters(g: Graph, cell: RecurrentCell, path: str) -> str:
    """The cell's weights as initializers (as its steps read them); its starting state's name."""
    p = g.values(cell)
    if type(cell).__name__ == "LSTM":
        for name in ("w", "u", "b"):
            g.parameter(f"{path}.{name}", p[name])
    else:
        i = cell.i
        g.parameter(f"{path}.w_x", p["w"][:, :i].T)
        g.parameter(f"{path}.w_y", p["w"][:, i:].T)
        g.parameter(f"{path}.b", p["b"])
    return g.parameter(f"{path}.state", p["state"][None])


def _unit_step(g: Graph, layer: Layer, x: str, in_shape: Shape, path: str, t: int,
               states: dict[str, str]) -> str:
    """A layer of a recurrent network at step t (cells read and replace their state in
    `states`, by path)."""
    if isinstance(layer, RecurrentCell):
        states[path], y = _cell_step(g, layer, x, states[path], path, t)
        return y
    if type(layer).__name__ == "ConcatRecurrent":
        ya, yb = (_unit_step(g, child, x, child_in, f"{path}.{key}", t, states)
                  for key, child, child_in in layer.children(in_shape))
        return g.node("Concat", [ya, yb], f"{path}.t{t}", axis=1)
    return export_layer(g, layer, x, in_shape, path)  # its parameters shared by every step


def to_onnx(net: Any, path: str | os.PathLike[str], steps: int | None = None) -> None:
    """Write `net` (a Network or RecurrentNetwork: see Network.to_onnx) as an ONNX model."""
    onnx = _onnx()
    helper = onnx.helper
    if net.nested:
        raise ValueError("this network is part of another network now; export that one")
    g = Graph(net.device.dtype)
    element = helper.np_dtype_to_tensor_dtype(g.dtype)
    in_dims, out_dims = list(net.input_shape.dims), list(net.output_shape.dims)
    outputs = []
    if hasattr(net, "recurrent_layers"):  # a RecurrentNetwork
        if not isinstance(steps, (int, np.integer)) or isinstance(steps, bool) or steps < 1:
            raise ValueError(f"a RecurrentNetwork is exported over a fixed number of steps: "
                             f"give steps=T >= 1, got {steps!r}")
        steps = int(steps)
        states = {p: _recurrent_parameters(g, cell, p) for p, cell in net.recurrent_layers()}
        ys = []
        for t in range(steps):
            x = g.node("Gather", ["input", g.ints(f"t{t}", t)], f"input.t{t}", axis=1)
            for (key, layer, in_shape) in net.children(net.input_shape):
                x = _unit_step(g, layer, x, in_shape, key, t, states)
            ys.append(g.node("Unsqueeze", [x, g.ints(f"output.t{t}.axis", [1])],
                             f"output.t{t}"))
        g.nodes.append(helper.make_node("Concat", ys, ["output"], name="output", axis=1))
        inputs = [helper.make_tensor_value_info("input", element, ["N", steps, *in_dims])]
        outputs.append(helper.make_tensor_value_info("output", element,
                                                     ["N", steps, *out_dims]))
        for k, (p, cell) in enumerate(net.recurrent_layers()):
            g.nodes.append(helper.make_node("Identity", [states[p]], [f"state{k}"],
                                            name=f"state{k}"))
            outputs.append(helper.make_tensor_value_info(f"state{k}", element,
                                                         [None, cell.state_size]))
    else:
        if steps is not None:
            raise ValueError("steps is for RecurrentNetworks")
        y = export_layer(g, net, "input", net.input_shape, "")
        g.nodes.append(helper.make_node("Identity", [y], ["output"], name="output"))
        inputs = [helper.make_tensor_value_info("input", element, ["N", *in_dims])]
        outputs.append(helper.make_tensor_value_info("output", element, ["N", *out_dims]))
    graph = helper.make_graph(g.nodes, type(net).__name__, inputs, outputs, g.initializers)
    opsets = [helper.make_opsetid("", OPSET)]
    # The oldest IR version that has the opset, not the onnx package's newest: an ONNX Runtime
    # older than the onnx package refuses newer IR versions (1.30 refused onnx 1.23's 14).
    model = helper.make_model(graph, opset_imports=opsets, producer_name="grenade_py",
                              ir_version=helper.find_min_ir_version_for(opsets))
    helper.set_model_props(model, {"grenade_py.spec": json.dumps(net.spec())})
    onnx.checker.check_model(model, full_check=True)
    write_atomically(path, model.SerializeToString())

