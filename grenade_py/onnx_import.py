"""ONNX import: the network an ONNX model describes, ready to run and train.

Two kinds of model: those grenade_py exported (`grenade_py.onnx_export`; their metadata holds
the network's spec, their initializers are named by layer path) come back as the same network,
recurrent ones included; any other model (PyTorch's exporter, say) must be a chain of ops that
grenade_py has layers for (see FOREIGN_OPS), which become those layers; nodes computed from
constants alone (PyTorch's ZeroPad2d computes its Pad's pads so; a Shape of the data is one,
the batch axis taken as 1) are computed once, by the onnx package's reference evaluator.
Needs the `onnx` package (pip install onnx: the [onnx] extra).
"""
from __future__ import annotations

import json
import os
from typing import Any, cast

import numpy as np

from grenade_py.device import Device
from grenade_py.errors import ModelFileError
from grenade_py.layers import (
    BatchNorm,
    Convolution,
    Crop,
    Deconvolution,
    Elu,
    FullyConnected,
    Gelu,
    Layer,
    LeakyRelu,
    Logit,
    Pad,
    Pooling,
    Relu,
    Reshape,
    Series,
    Sinusoid,
    Softmax,
    Tanh,
    Trivial,
)
from grenade_py.onnx_export import _onnx
from grenade_py.shapes import D1, D2, D3, Shape

#: The ops of other exporters' models that become grenade_py layers (a Conv's zero padding a
#: Pad before its Convolution, a ConvTranspose's a Crop after its Deconvolution, and its
#: output_padding past that padding a Pad; the rows a Conv's or MaxPool's windows leave out a
#: Crop before it).
FOREIGN_OPS = ("Gemm", "MatMul", "Add (a MatMul's bias)", "Mul by 1", "Relu", "Tanh", "Sigmoid",
               "Sin", "Elu", "LeakyRelu", "Gelu (exact; or written out with Erf)", "Softmax",
               "Identity", "Dropout", "Flatten", "Reshape", "Conv", "ConvTranspose", "MaxPool",
               "Pad", "BatchNormalization")


def _decimal(value: float) -> float:
    """A float attribute (ONNX keeps them in float32) as the shortest decimal that float32
    holds as it: the value its exporter was given (0.2 for float32's 0.2000000029...), so that
    a float64 network computes what the exported model did (PyTorch's LeakyReLU(0.2),
    BatchNorm2d's eps 1e-5)."""
    return float(str(np.float32(value)))


def _shape(dims: list[int]) -> Shape:
    """A sample's shape from its ONNX dims (no batch axis)."""
    if len(dims) == 1:
        return D1(dims[0])
    if len(dims) == 2:
        return D2(*dims)
    if len(dims) == 3:
        return D3(dims[1], dims[2], dims[0])
    raise ModelFileError(f"an input of {len(dims) + 1} axes has no grenade_py shape")


def _ours(cls: Any, spec: dict[str, Any], weights: dict[str, np.ndarray], device: Device
          ) -> Any:
    """The network grenade_py exported, its parameters from the initializers."""
    if spec.get("type") != cls.__name__:
        raise ModelFileError(f"this model holds a {spec.get('type')}: read it with "
                             f"{spec.get('type')}.from_onnx")
    net = cls.from_spec(spec, device=device, seed=0)

    def get(name: str) -> np.ndarray:
        if name not in weights:
            raise ModelFileError(f"this model has no initializer {name!r}: not the export of "
                                 "this network")
        return weights[name]

    values = net.get_parameters()
    for path, layer, _ in net.nodes(net.input_shape):
        if not path or layer.children(layer.in_shape) or not layer.parameter_shapes():
            continue
        kind = type(layer).__name__
        top, _, rest = path.partition(".")
        prefix = f"{rest}." if rest else ""
        rearranged = {"Convolution": "kernel", "Deconvolution": "kernel",
                      "BasicRecurrent": "w"}.get(kind)  # stored as onnx_export lays it out
        found = {name: get(f"{path}.{name}") for name in layer.parameter_shapes()
                 if name != rearranged}
        if kind in ("Convolution", "Deconvolution"):
            weight = get(f"{path}.kernel")
            found["kernel"] = weight.reshape(weight.shape[0], -1).T
        if kind == "BasicRecurrent":
            found["w"] = np.concatenate([get(f"{path}.w_x").T, get(f"{path}.w_y").T], axis=1)
        if "state" in found:
            found["state"] = found["state"][0]
        if kind == "BatchNorm":
            layer.set_state({k: get(f"{path}.{k}").astype(float).tolist()
                             for k in ("running_mean", "running_var")})
        values[int(top)] |= {prefix + name: value for name, value in found.items()}
    net.set_parameters(values)
    return net


class _Chain:
    """Another exporter's graph read as a chain of layers."""

    def __init__(self, graph: Any, weights: dict[str, np.ndarray], opsets: dict[str, int]
                 ) -> None:
        self.weights, self.opsets = dict(weights), opsets
        self.layers: list[Layer] = []
        self.values: list[dict[str, np.ndarray]] = []
        self.states: dict[int, dict[str, Any]] = {}
        inputs = [i for i in graph.input if i.name not in self.weights]
        if len(inputs) != 1 or len(graph.output) != 1:
            raise ModelFileError("only graphs of one input and one output are read")
        #: The data's element type (a CastLike of a constant to it is a constant).
        self.dtype = _onnx().helper.tensor_dtype_to_np_dtype(inputs[0].type.tensor_type.elem_type)
        #: An exact GELU being read node by node (`gelu`): its input, and the parts read.
        self.gelu_at: tuple[str, list[str]] | None = None
        dims = [d.dim_value for d in inputs[0].type.tensor_type.shape.dim][1:]
        if not dims or not all(dims):
            raise ModelFileError("the input's sample axes need fixed sizes")
        self.input_shape = _shape(dims)
        self.current, self.graph = inputs[0].name, graph
        self.last = ""

    def shape(self) -> Shape:
        return Series(self.layers).out_shape(self.input_shape) if self.layers else \
            self.input_shape

    def add(self, layer: Layer, values: dict[str, np.ndarray] | None = None) -> None:
        self.layers.append(layer)
        self.values.append(values or {})

    def constant(self, node: Any, index: int) -> np.ndarray:
        name = node.input[index]
        if name not in self.weights:
            raise ModelFileError(f"node {node.name!r} ({node.op_type}): its input {name!r} must "
                                 "be a constant")
        return self.weights[name]

    def read(self) -> None:
        onnx = _onnx()
        attrs: dict[str, Any]
        for node in self.graph.node:
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            if all(name in self.weights for name in node.input if name):  # constants alone
                self.fold(node)
                continue
            if node.op_type == "CastLike" and node.input[0] in self.weights:  # (PyTorch's
                # dynamo exporter casts a convolution's zero bias so)
                self.weights[node.output[0]] = self.weights[node.input[0]].astype(self.dtype)
                continue
            if self.gelu(node):
                self.current, self.last = node.output[0], node.op_type
                continue
            if node.op_type == "Shape" and node.input[0] == self.current:  # a constant too,
                # the batch axis 1 (PyTorch's x.view(x.size(0), -1): a Reshape's target, whose
                # batch entry the Reshape leaves out)
                full = np.array([1, *self.shape().dims], np.int64)
                self.weights[node.output[0]] = full[attrs.get("start", 0):attrs.get("end")]
                continue
            if not node.input or node.input[0] != self.current:
                raise ModelFileError(f"node {node.name!r} ({node.op_type}) does not follow the "
                                     "one before it: only chains of layers are read")
            self.op(node, attrs)
            self.current, self.last = node.output[0], node.op_type
        if self.gelu_at is not None:
            raise ModelFileError("the graph ends inside what was read as a GELU")
        if self.current != self.graph.output[0].name:
            raise ModelFileError("the graph's output is not the end of its chain of nodes")

    def scalar(self, name: str | None) -> float | None:
        """The value of a constant of one element, else None."""
        value = self.weights.get(name or "")
        return float(value.reshape(-1)[0]) if value is not None and value.size == 1 else None

    def gelu(self, node: Any) -> bool:
        """Whether `node` is part of an exact GELU written out, x * 0.5 * (1 + erf(x / sqrt(2))),
        as exporters write nn.GELU below ONNX's opset 20 (a Div by sqrt(2), Erf, Add 1, and a
        Mul by x and one by 0.5 in either order): a Gelu once its last part is read."""
        ins, op = list(node.input), node.op_type
        if self.gelu_at is None:
            if op == "Div" and ins[0] == self.current and len(ins) == 2 and \
                    np.isclose(self.scalar(ins[1]) or 0, np.sqrt(2)):
                self.gelu_at = (self.current, [])
                return True
            return False
        x, parts = self.gelu_at
        other = ins[1 - ins.index(self.current)] if len(ins) == 2 and self.current in ins else None
        part = "Erf" if op == "Erf" and ins == [self.current] else \
            "1" if op == "Add" and self.scalar(other) == 1 else \
            "x" if op == "Mul" and other == x else \
            "0.5" if op == "Mul" and self.scalar(other) == 0.5 else None
        expected = ["Erf", "1"][len(parts):len(parts) + 1] or \
            [name for name in ("x", "0.5") if name not in parts]
        if part not in expected:
            raise ModelFileError(f"node {node.name!r} ({op}) does not go on with what was read as "
                                 "an exact GELU from a Div by sqrt(2): x * 0.5 * (1 + erf(x / "
                                 "sqrt(2)))")
        parts.append(cast(str, part))
        if len(parts) == 4:
            self.add(Gelu())
            self.gelu_at = None
        return True

    def fold(self, node: Any) -> None:
        """Compute a node of constants alone (a Constant, or the nodes giving a Pad its pads)
        by the onnx package's reference evaluator, keeping its outputs as constants."""
        from onnx.reference import ReferenceEvaluator

        given = {name: self.weights[name] for name in node.input if name}
        try:
            found = ReferenceEvaluator(node, opsets=self.opsets).run(None, given)
        except Exception as e:  # whatever an op the evaluator lacks or rejects raises
            raise ModelFileError(f"node {node.name!r} ({node.op_type}) of constants alone could "
                                 f"not be computed: {e}") from None
        self.weights.update(zip(node.output, cast(list[np.ndarray], found), strict=True))

    def op(self, node: Any, attrs: dict[str, Any]) -> None:
        op, where = node.op_type, f"node {node.name!r} ({node.op_type})"
        simple = {"Relu": Relu, "Tanh": Tanh, "Sigmoid": Logit, "Sin": Sinusoid,
                  "Identity": Trivial, "Dropout": Trivial}
        if op in simple:
            self.add(simple[op]())
        elif op == "Elu" and attrs.get("alpha", 1.0) == 1.0:
            self.add(Elu())
        elif op == "LeakyRelu":
            self.add(LeakyRelu(_decimal(attrs.get("alpha", 0.01))))
        elif op == "Gelu":  # opset 20; the tanh form is not Gelu(approximate=True)'s sigmoid
            approximate = attrs.get("approximate", b"none")
            approximate = approximate.decode() if isinstance(approximate, bytes) else approximate
            if approximate != "none":
                raise ModelFileError(f"{where}: only the exact (erf) GELU is read, not its "
                                     f"{approximate!r} approximation")
            self.add(Gelu())
        elif op == "Softmax" and attrs.get("axis", -1) in (1, -1):
            self.add(Softmax())
        elif op == "Gemm" and attrs.get("transA", 0) == 0 and \
                attrs.get("alpha", 1.0) == attrs.get("beta", 1.0) == 1.0:
            w = self.constant(node, 1)
            w = w if attrs.get("transB", 0) else w.T
            bias = self.constant(node, 2) if len(node.input) > 2 else np.zeros(w.shape[0])
            self.add(FullyConnected(w.shape[1], w.shape[0]), {"weights": w, "bias": bias})
        elif op == "MatMul":
            w = self.constant(node, 1).T
            self.add(FullyConnected(w.shape[1], w.shape[0]),
                     {"weights": w, "bias": np.zeros(w.shape[0])})
        elif op in ("Mul", "Div") and len(node.input) == 2 and self.scalar(node.input[1]) == 1:
            pass  # x * 1 (PyTorch's dynamo exporter scales an ELU's input and output so)
        elif op == "Add" and self.last == "MatMul" and len(node.input) == 2:
            self.values[-1]["bias"] = self.values[-1]["bias"] + self.constant(node, 1)
        elif op in ("Flatten", "Reshape"):
            if op == "Flatten" and attrs.get("axis", 1) != 1:
                raise ModelFileError(f"{where}: only Flatten from axis 1 is read")
            shape = self.shape()
            target = [int(np.prod(shape.dims))] if op == "Flatten" else \
                [int(v) for v in self.constant(node, 1)][1:]
            if -1 in target:
                target[target.index(-1)] = int(np.prod(shape.dims)) // -int(np.prod(target))
            self.add(Reshape(_shape(target)))
        elif op in ("Conv", "ConvTranspose", "MaxPool"):
            self.spatial(node, attrs, where)
        elif op == "Pad" and attrs.get("mode", b"constant") in (b"constant", "constant"):
            pads = [int(v) for v in self.constant(node, 1)]
            half = len(pads) // 2
            if any(pads[:half - 2] + pads[half:-2]) or (len(node.input) > 2 and node.input[2]
                                                       and self.constant(node, 2).any()):
                raise ModelFileError(f"{where}: only zero padding of rows and cols is read")
            self.add(Pad(pads[half - 1], pads[half - 2], pads[-1], pads[-2]))
        elif op == "BatchNormalization":
            gamma, beta, mean, var = (self.constant(node, k) for k in range(1, 5))
            self.states[len(self.layers)] = {"running_mean": mean.astype(float).tolist(),
                                             "running_var": var.astype(float).tolist()}
            self.add(BatchNorm(len(gamma), _decimal(attrs.get("epsilon", 1e-5)),
                               1 - _decimal(attrs.get("momentum", 0.9))),
                     {"gamma": gamma, "beta": beta})
        else:
            raise ModelFileError(f"{where} has no grenade_py layer here (read: "
                                 f"{', '.join(FOREIGN_OPS)})")

    def pad_to_fit(self, left: int, top: int, right: int, bottom: int,
                   kernel: tuple[int, int], strides: list[int]) -> None:
        """A Pad of a Conv's zero padding, and a Crop of the last rows and cols that its (or a
        MaxPool's) windows leave out, before the layer: ONNX, as PyTorch, leaves them out
        (its output size rounds down), where Grenade's Convolution and Pooling need windows
        that end at the input's edge."""
        _, rows, cols = self.shape().dims
        ends = [edge - (size + first + edge - k) % stride if size + first + edge >= k else edge
                for size, first, edge, k, stride in
                zip((rows, cols), (top, left), (bottom, right), kernel, strides, strict=True)]
        if any((left, top, max(ends[1], 0), max(ends[0], 0))):
            self.add(Pad(left, top, max(ends[1], 0), max(ends[0], 0)))
        if min(ends) < 0:
            self.add(Crop(0, 0, max(-ends[1], 0), max(-ends[0], 0)))

    def spatial(self, node: Any, attrs: dict[str, Any], where: str) -> None:
        top, left, bottom, right = attrs.get("pads", [0, 0, 0, 0])
        extra = attrs.get("output_padding", [0, 0])  # a ConvTranspose's: less cropped at the end
        if any(d != 1 for d in attrs.get("dilations", [])) or attrs.get("group", 1) != 1 or \
                attrs.get("ceil_mode", 0) or "output_shape" in attrs or \
                attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET") or \
                (node.op_type == "MaxPool" and any((top, left, bottom, right))):
            raise ModelFileError(f"{where}: only undilated, ungrouped windows are read, padded "
                                 "by zeros (a MaxPool's unpadded)")
        if node.op_type in ("Conv", "ConvTranspose") and len(node.input) > 2 and node.input[2] \
                and self.constant(node, 2).any():
            raise ModelFileError(
                f"{where} has a bias, which grenade_py's (Grenade's) convolutions do not: export "
                "it without (bias=False; PyTorch's exporter also folds a BatchNorm after a "
                "convolution into a bias, unless given do_constant_folding=False, or "
                "optimize=False with dynamo=True)")
        strides = attrs.get("strides", [1, 1])
        weight = None if node.op_type == "MaxPool" else self.constant(node, 1)
        kh, kw = attrs["kernel_shape"] if weight is None else weight.shape[2:]
        if node.op_type != "ConvTranspose":
            self.pad_to_fit(left, top, right, bottom, (kh, kw), strides)
        if weight is None:
            self.add(Pooling(kh, kw, *strides))
            return
        kernel = weight.reshape(weight.shape[0], -1).T
        if node.op_type == "Conv":
            self.add(Convolution(weight.shape[1], weight.shape[0], kh, kw, *strides),
                     {"kernel": kernel})
        else:
            self.add(Deconvolution(weight.shape[0], weight.shape[1], kh, kw, *strides),
                     {"kernel": kernel})
            # output_padding: rows and cols kept at the end, past the end zeros
            ends = (right - extra[1], bottom - extra[0])
            if any((top, left, max(ends[0], 0), max(ends[1], 0))):
                self.add(Crop(left, top, max(ends[0], 0), max(ends[1], 0)))
            if min(ends) < 0:
                self.add(Pad(0, 0, max(-ends[0], 0), max(-ends[1], 0)))


def from_onnx(cls: Any, path: str | os.PathLike[str], device: Device | str | None = None
              ) -> Any:
    """The `cls` (Network or RecurrentNetwork: see Network.from_onnx) that the ONNX model at
    `path` describes."""
    onnx = _onnx()
    try:
        model = onnx.load(os.fspath(path))
    except OSError as e:
        raise ModelFileError(f"cannot read {path}: {e.strerror or e}") from None
    except Exception as e:  # protobuf's DecodeError and kin
        raise ModelFileError(f"{path} is not an ONNX model: {e}") from None
    try:
        return _read(cls, onnx, model, device)
    except (ModelFileError, ValueError, TypeError, KeyError) as e:  # a spec, shape or tensor
        # that does not decode (UnicodeDecodeError, JSONDecodeError, ShapeError are ValueErrors)
        raise ModelFileError(f"{path}: {e}") from None


def _read(cls: Any, onnx: Any, model: Any, device: Device | str | None) -> Any:
    """from_onnx's network from the loaded `model`."""
    weights = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    floats = [w.dtype for w in weights.values() if w.dtype.kind == "f"]
    precision = "float64" if floats and all(d == np.float64 for d in floats) else "float32"
    placed = device if isinstance(device, Device) else \
        Device(precision=precision) if device is None else Device(device)
    props = {p.key: p.value for p in model.metadata_props}
    if "grenade_py.spec" in props:
        return _ours(cls, json.loads(props["grenade_py.spec"]), weights, placed)
    chain = _Chain(model.graph, weights, {o.domain: o.version for o in model.opset_import})
    chain.read()
    net = cls(chain.layers, input=chain.input_shape, device=placed, seed=0)
    net.set_parameters([values if layer.parameter_shapes() else {}
                        for layer, values in zip(chain.layers, chain.values, strict=True)])
    for index, state in chain.states.items():
        net.layers[index].set_state(state)
    return net
