"""ONNX export and import: every shipped example network exported, checked by onnx.checker and run
by ONNX Runtime (float64 convolutions, which ONNX Runtime's CPU provider does not have, by the
onnx package's reference evaluator) to the outputs of run_net / run_recurrent; round trips; and
networks PyTorch's exporter wrote."""
from __future__ import annotations

import re
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import get_device

import grenade_py as g
from grenade_py.errors import ModelFileError
from grenade_py.export import main as export_main
from grenade_py.feedforward import feedforward_network
from grenade_py.mnist import mnist_network
from grenade_py.shakespeare import shakespeare_network

onnx = pytest.importorskip("onnx", reason="ONNX export needs onnx (pip install '.[test]')")
ort = pytest.importorskip("onnxruntime", reason="the exports run in onnxruntime "
                                                "(pip install '.[test]')")
sys.path.insert(0, str(Path(__file__).parent.parent / "examples"))


def gan_generator(device: g.Device) -> g.Network:
    from gan_mnist import networks

    _, generator = networks(np.random.SeedSequence(1), np.random.SeedSequence(2))
    return g.Network.from_spec(generator.spec(), device=device, seed=2)


def resnet_block(device: g.Device) -> g.Network:
    """A Resnet block and the layers no example uses."""
    return g.Network([
        g.Reshape(g.D3(4, 4, 2)), g.Resnet([g.Pad(1, 1, 1, 1), g.Convolution(2, 2, 3, 3, 1, 1),
                                            g.BatchNorm(2), g.Relu()]),
        g.Crop(1, 0, 0, 1), g.Gelu(), g.LeakyTanh(0.5), g.Reshape(g.D1(18)),
        g.Concat(g.Gelu(approximate=True), [g.Sinusoid(), g.Elu()], stacked=True),
        g.Reshape(g.D1(36)), g.LeakyRelu(0.1), g.Dropout(0.5),
        g.Merge(g.FullyConnected(36, 3), g.Network([g.FullyConnected(36, 3), g.Tanh()],
                                                    input=g.D1(36), device=device)),
        g.Softmax()], input=g.D1(32), device=device, seed=2)


FEED_FORWARD = {
    "feedforward": lambda d: feedforward_network(d, seed=1),
    **{arch: (lambda d, arch=arch: mnist_network(arch, d, seed=1))
       for arch in ("mlp", "mlp3", "lenet", "inception", "bn")},
    "resnet": resnet_block,
    "gan generator": gan_generator,
}


def trained(net: g.Network, rng: np.random.Generator) -> np.ndarray:
    """Two training steps (BatchNorm's running statistics move off 0 and 1); a batch of 3."""
    x = rng.uniform(size=(8, *net.input_shape.dims))
    y = rng.uniform(size=(8, *net.output_shape.dims))
    for _ in range(2):
        g.train(net, g.Adam(0.01), x, y)
    return x[:3]


def run_onnx(path: Path, feeds: dict[str, np.ndarray], float64_convolutions: bool
             ) -> list[np.ndarray]:
    if float64_convolutions:
        from onnx.reference import ReferenceEvaluator

        return ReferenceEvaluator(str(path)).run(None, feeds)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


@pytest.mark.parametrize("name", sorted(FEED_FORWARD))
def test_example_networks_run_in_onnxruntime(device, tmp_path, name):
    """Within 1e-5 absolute in float32 and 1e-10 in float64; and the model reads back as the
    same network."""
    net = FEED_FORWARD[name](device)
    x = trained(net, np.random.default_rng(3))
    net.to_onnx(tmp_path / "net.onnx")
    onnx.checker.check_model(str(tmp_path / "net.onnx"), full_check=True)
    convolutions = any(type(layer).__name__ in ("Convolution", "Deconvolution")
                       for _, layer, _ in net.nodes(net.input_shape))
    reference = device.precision == "float64" and convolutions
    (got,) = run_onnx(tmp_path / "net.onnx", {"input": x.astype(device.dtype)}, reference)
    want = g.run_net(net, x)
    # The reference evaluator's Erf is good to ~1.5e-8 in float64 (against math.erf; ours to
    # 1e-16), so an exact Gelu there is held to 5e-8.
    erf = any(layer.spec() == {"type": "Gelu", "approximate": False}
              for _, layer, _ in net.nodes(net.input_shape))
    atol = 1e-5 if device.precision == "float32" else 5e-8 if reference and erf else 1e-10
    np.testing.assert_allclose(got, want, rtol=0, atol=atol)
    back = g.Network.from_onnx(tmp_path / "net.onnx", device=device)
    assert back.spec() == net.spec()
    np.testing.assert_array_equal(g.run_net(back, x), want)


@pytest.mark.parametrize("which", ["shakespeare", "branches"])
def test_recurrent_networks_run_in_onnxruntime(device, tmp_path, which):
    """Unrolled over the steps given, from the learned starting states; each cell's last state
    an output; and read back as the same network."""
    rng = np.random.default_rng(4)
    net = shakespeare_network(12, device, seed=1) if which == "shakespeare" else \
        g.RecurrentNetwork([g.FullyConnected(3, 4), g.ConcatRecurrent(
            g.ConcatRecurrent(g.BasicRecurrent(4, 2), g.Tanh()), g.LSTM(4, 3)), g.LSTM(9, 2)],
            input=g.D1(3), device=device, seed=1)
    params = net.get_parameters()
    for p in params:
        for name in p:
            if name.endswith("state"):
                p[name] = rng.normal(size=p[name].shape)
    net.set_parameters(params)
    net.to_onnx(tmp_path / "rnn.onnx", steps=np.int64(7))  # a numpy int too (was refused)
    xs = rng.uniform(size=(2, 7, *net.input_shape.dims))
    ys, states = g.run_recurrent(net, xs)
    got = run_onnx(tmp_path / "rnn.onnx", {"input": xs.astype(device.dtype)}, False)
    atol = 1e-5 if device.precision == "float32" else 1e-10
    np.testing.assert_allclose(got[0], ys, rtol=0, atol=atol)
    assert len(got) == 1 + len(net.recurrent_layers())
    for a, b in zip(got[1:], states.get(), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=atol)
    back = g.RecurrentNetwork.from_onnx(tmp_path / "rnn.onnx", device=device)
    np.testing.assert_array_equal(g.run_recurrent(back, xs)[0], ys)
    with pytest.raises(ModelFileError, match="holds a RecurrentNetwork: read it with "
                                             "RecurrentNetwork.from_onnx"):
        g.Network.from_onnx(tmp_path / "rnn.onnx")
    with pytest.raises(ValueError, match="give steps=T >= 1"):
        net.to_onnx(tmp_path / "no.onnx")
    assert not (tmp_path / "no.onnx").exists()


def torch_export(model, example, path: Path, dtype=None, **options) -> None:
    torch = pytest.importorskip("torch", reason="PyTorch's exporter writes these models")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(example, dtype=dtype),), str(path), dynamo=False,
                          input_names=["x"], dynamic_axes={"x": {0: "n"}}, **options)


def dynamo_export(model, example, path: Path, dtype=None, **options) -> None:
    """`model` exported as torch.onnx.export does by default (dynamo=True), quietly."""
    torch = pytest.importorskip("torch", reason="PyTorch's exporter writes these models")
    pytest.importorskip("onnxscript", reason="PyTorch's default ONNX exporter needs onnxscript "
                                             "(pip install '.[test]')")
    import contextlib
    import io
    import logging

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(example, dtype=dtype),), str(path), **options)


def sgd_step(model, loss, rate: float) -> None:
    """Plain gradient descent on `model`'s parameters from `loss`."""
    import torch

    loss.backward()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter -= rate * parameter.grad


def runs_and_trains_as_torch(net: g.Network, model, x: np.ndarray, y: np.ndarray) -> None:
    """The float64 `net` imported from `model` gives its outputs on x, and after one SGD step
    (no momentum, no L2) on the half squared error against y, again."""
    import torch

    np.testing.assert_allclose(g.run_net(net, x), model(torch.tensor(x)).detach().numpy(),
                               rtol=1e-12, atol=1e-14)
    g.train(net, g.LearningParameters(0.1, 0.0, 0.0), x, y)
    sgd_step(model, 0.5 * ((model(torch.tensor(x)) - torch.tensor(y)) ** 2).sum() / len(x),
             0.1)
    np.testing.assert_allclose(g.run_net(net, x), model(torch.tensor(x)).detach().numpy(),
                               rtol=1e-10, atol=1e-12)


def test_a_pytorch_mlp_imports_runs_and_trains_on(tmp_path):
    """PyTorch's nn.Linear/ReLU/Tanh export (Gemm) becomes FullyConnected layers with its
    weights: the same outputs, and one SGD step (no momentum, no L2) on the half squared error
    equals torch's."""
    torch = pytest.importorskip("torch", reason="PyTorch is the oracle here")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 5),
                                torch.nn.Tanh(), torch.nn.Linear(5, 3)).double()
    torch_export(model, (1, 4), tmp_path / "mlp.onnx", torch.float64)
    net = g.Network.from_onnx(tmp_path / "mlp.onnx", device=get_device("float64"))
    assert repr(net).startswith("Network '[FullyConnected 4 8, Relu, FullyConnected 8 5, Tanh, "
                                "FullyConnected 5 3]")
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(6, 4)), rng.normal(size=(6, 3))
    runs_and_trains_as_torch(net, model, x, y)


def test_a_pytorch_gelu_imports(tmp_path):
    """ONNX's Gelu op (opset 20), as PyTorch's nn.GELU exports: Gelu(), equal to PyTorch's
    outputs in float64; its tanh approximation (not Gelu(approximate=True)'s) is named."""
    torch = pytest.importorskip("torch", reason="PyTorch is the oracle here")
    torch.manual_seed(4)
    nn = torch.nn
    model = nn.Sequential(nn.Linear(3, 6), nn.GELU(), nn.Linear(6, 2)).double()
    torch_export(model, (1, 3), tmp_path / "gelu.onnx", torch.float64, opset_version=20)
    net = g.Network.from_onnx(tmp_path / "gelu.onnx")
    assert repr(net).startswith("Network '[FullyConnected 3 6, Gelu, FullyConnected 6 2]")
    x = np.random.default_rng(5).normal(size=(7, 3))
    np.testing.assert_allclose(g.run_net(net, x), model(torch.tensor(x)).detach().numpy(),
                               rtol=1e-12, atol=1e-14)
    torch_export(nn.Sequential(nn.Linear(3, 2), nn.GELU(approximate="tanh")), (1, 3),
                 tmp_path / "tanh.onnx", opset_version=20)
    with pytest.raises(ModelFileError, match=r"\(Gelu\): only the exact \(erf\) GELU is read, "
                       r"not its 'tanh' approximation$"):
        g.Network.from_onnx(tmp_path / "tanh.onnx")


def test_an_exact_gelu_written_out_imports(tmp_path):
    """Below opset 20 exporters write nn.GELU as x * 0.5 * (1 + erf(x / sqrt(2))) (a Div, Erf,
    Add and two Muls, in PyTorch's two exporters' two orders): a Gelu, whose network runs and
    trains as PyTorch's in float64; nodes that start so and then do not go on, or a graph
    that ends among them, are named."""
    torch = pytest.importorskip("torch", reason="PyTorch is the oracle here")
    torch.manual_seed(5)
    nn = torch.nn
    model = nn.Sequential(nn.Linear(3, 6), nn.GELU(), nn.Linear(6, 2)).double()
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(5, 3)), rng.normal(size=(5, 2))
    for name, export in (("legacy", lambda path: torch_export(
            model, (1, 3), path, torch.float64, opset_version=17)),
            ("dynamo", lambda path: dynamo_export(model, (1, 3), path, torch.float64,
                                                  opset_version=18))):
        export(tmp_path / f"{name}.onnx")
        model.zero_grad()  # (the last round's step left its gradients)
        ops = [node.op_type for node in onnx.load(tmp_path / f"{name}.onnx").graph.node]
        assert "Erf" in ops and "Gelu" not in ops
        net = g.Network.from_onnx(tmp_path / f"{name}.onnx")
        assert repr(net).startswith("Network '[FullyConnected 3 6, Gelu, FullyConnected 6 2]")
        runs_and_trains_as_torch(net, model, x, y)
    helper, real = onnx.helper, onnx.TensorProto.FLOAT
    root = helper.make_tensor("root", real, [], [2 ** 0.5])
    for nodes, message in (
            ([helper.make_node("Div", ["x", "root"], ["a"]),
              helper.make_node("Relu", ["a"], ["y"])],
             r"node 'r' \(Relu\) does not go on with what was read as an exact GELU"),
            ([helper.make_node("Div", ["x", "root"], ["y"])],
             "the graph ends inside what was read as a GELU$")):
        nodes[-1].name = "r"
        onnx.save(helper.make_model(helper.make_graph(
            nodes, "g", [helper.make_tensor_value_info("x", real, ["n", 3])],
            [helper.make_tensor_value_info("y", real, ["n", 3])], [root])), tmp_path / "cut")
        with pytest.raises(ModelFileError, match=message):
            g.Network.from_onnx(tmp_path / "cut")


def test_an_output_padding_past_the_padding_imports_as_a_pad(tmp_path):
    """A ConvTranspose2d whose output_padding reaches past its padding (PyTorch allows it up to
    the stride) adds rows and cols of zeros at the end: a Deconvolution, a Crop of the padding
    and a Pad of zeros, which runs and trains as PyTorch's in float64."""
    torch = pytest.importorskip("torch", reason="PyTorch is the oracle here")
    torch.manual_seed(7)
    nn = torch.nn
    model = nn.Sequential(nn.ConvTranspose2d(2, 3, 3, stride=(2, 3), padding=(1, 0),
                                             output_padding=(1, 2), bias=False), nn.Tanh(),
                          nn.Flatten(), nn.Linear(3 * 8 * 14, 2)).double()
    torch_export(model, (1, 2, 4, 4), tmp_path / "out.onnx", torch.float64)
    net = g.Network.from_onnx(tmp_path / "out.onnx")
    assert repr(net).startswith("Network '[Deconvolution 2 3 3 3 2 3, Crop 0 1 0 0, Pad 0 0 2 0, "
                                "Tanh, Reshape D1 336")
    rng = np.random.default_rng(9)
    x, y = rng.normal(size=(3, 2, 4, 4)), rng.normal(size=(3, 2))
    runs_and_trains_as_torch(net, model, x, y)


def test_a_pytorch_lenet_imports_runs_and_trains_on(tmp_path):
    """LeNet without biases on its convolutions (Grenade's have none): within 1e-5 of
    PyTorch's outputs in float32; in float64, one SGD step under cross entropy equals
    torch's."""
    torch = pytest.importorskip("torch", reason="PyTorch is the oracle here")
    torch.manual_seed(1)
    nn = torch.nn
    model = nn.Sequential(nn.Conv2d(1, 10, 5, bias=False), nn.MaxPool2d(2), nn.ReLU(),
                          nn.Conv2d(10, 16, 5, bias=False), nn.MaxPool2d(2), nn.ReLU(),
                          nn.Flatten(), nn.Linear(256, 80), nn.Sigmoid(), nn.Linear(80, 10),
                          nn.Softmax(dim=1))
    torch_export(model, (1, 1, 28, 28), tmp_path / "lenet.onnx")
    net = g.Network.from_onnx(tmp_path / "lenet.onnx")
    assert net.device.precision == "float32" and net.input_shape == g.D3(28, 28, 1)
    rng = np.random.default_rng(3)
    x = rng.uniform(size=(16, 1, 28, 28))
    y = np.eye(10)[rng.integers(0, 10, 16)]
    np.testing.assert_allclose(g.run_net(net, x), model(torch.tensor(x).float()).detach().numpy(),
                               rtol=0, atol=1e-5)
    model = model.double()
    torch_export(model, (1, 1, 28, 28), tmp_path / "lenet64.onnx", torch.float64)
    net = g.Network.from_onnx(tmp_path / "lenet64.onnx")
    assert net.device.precision == "float64"
    g.train(net, g.LearningParameters(0.5, 0.0, 0.0), x, y, loss="cross_entropy")
    sgd_step(model, -(torch.tensor(y) * torch.log(model(torch.tensor(x)))).sum() / len(x), 0.5)
    np.testing.assert_allclose(g.run_net(net, x), model(torch.tensor(x)).detach().numpy(),
                               rtol=1e-9, atol=1e-12)


def test_a_padded_pytorch_convnet_imports_runs_and_trains_on(tmp_path):
    """Padding as PyTorch exports it: ZeroPad2d (a Pad whose pads a chain of constant nodes
    computes), a Conv2d's padding (a Pad before the Convolution) and a ConvTranspose2d's padding
    and output_padding (a Crop after the Deconvolution); with LeakyReLU(0.2), ELU and
    x.view(x.size(0), -1) (a Reshape whose target is computed from the data's Shape), in
    float64: PyTorch's outputs, and one SGD step on the half squared error equals torch's."""
    torch = pytest.importorskip("torch", reason="PyTorch is the oracle here")
    torch.manual_seed(3)
    nn = torch.nn

    class View(nn.Module):
        def forward(self, x):
            return x.view(x.size(0), -1)

    model = nn.Sequential(
        nn.ZeroPad2d((1, 2, 0, 1)), nn.Conv2d(1, 4, 3, padding=1, bias=False),
        nn.LeakyReLU(0.2), nn.MaxPool2d(2), nn.Conv2d(4, 3, (3, 2), padding=(2, 1), bias=False),
        nn.ELU(), nn.ConvTranspose2d(3, 2, 3, stride=2, padding=1, output_padding=1,
                                     bias=False),
        nn.Tanh(), View(), nn.Linear(200, 5)).double()
    torch_export(model, (1, 1, 5, 5), tmp_path / "pads.onnx", torch.float64)
    net = g.Network.from_onnx(tmp_path / "pads.onnx")
    assert repr(net).startswith(
        "Network '[Pad 1 0 2 1, Pad 1 1 1 1, Convolution 1 4 3 3 1 1, LeakyRelu 0.2, Pooling 2 2 "
        "2 2, Pad 1 2 1 2, Convolution 4 3 3 2 1 1, Elu, Deconvolution 3 2 3 3 2 2, Crop 1 1 0 0, "
        "Tanh, Reshape D1 200, FullyConnected 200 5]")
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(4, 1, 5, 5)), rng.normal(size=(4, 5))
    runs_and_trains_as_torch(net, model, x, y)


def test_pytorch_windows_that_leave_rows_out_import_as_crops(tmp_path):
    """A strided Conv2d or a MaxPool2d whose last windows would run past the (padded) input
    leaves its last rows and cols out (PyTorch's output sizes round down); Grenade's layers need
    windows that end at the edge, so the import pads less at the end, or crops: on 10 x 12
    inputs, PyTorch's outputs, and one SGD step equals torch's."""
    torch = pytest.importorskip("torch", reason="PyTorch is the oracle here")
    torch.manual_seed(6)
    nn = torch.nn
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, stride=2, padding=1, bias=False), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 3, 2, stride=3, padding=1, bias=False), nn.Tanh(), nn.Flatten(),
        nn.Linear(6, 2)).double()
    torch_export(model, (1, 1, 10, 12), tmp_path / "floor.onnx", torch.float64)
    net = g.Network.from_onnx(tmp_path / "floor.onnx")
    assert repr(net).startswith(
        "Network '[Pad 1 1 0 0, Convolution 1 4 3 3 2 2, Relu, Crop 0 0 0 1, Pooling 2 2 2 2, "
        "Pad 1 1 1 0, Crop 0 0 0 1, Convolution 4 3 2 2 3 3, Tanh, Reshape D1 6, "
        "FullyConnected 6 2]")
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(3, 1, 10, 12)), rng.normal(size=(3, 2))
    runs_and_trains_as_torch(net, model, x, y)


def test_a_pytorch_batch_norm_imports_with_its_running_statistics(tmp_path):
    """BatchNormalization, exported so that it is kept (without constant folding; under the
    default dynamo exporter, unoptimised, which gives the convolution a zero bias, a CastLike
    of zeros to the data's type, and writes the ELU between multiplications by 1): BatchNorm
    with PyTorch's scale, shift, running statistics and eps 1e-5 (ONNX holds it in float32), so
    run_net in float64 is PyTorch's eval() output. Folded into the convolution as a bias (the
    exporters' default), it is refused saying how to keep it."""
    torch = pytest.importorskip("torch", reason="PyTorch is the oracle here")
    torch.manual_seed(4)
    nn = torch.nn
    norm = nn.BatchNorm2d(3)
    with torch.no_grad():
        for value in (norm.running_mean, norm.weight, norm.bias):
            value.copy_(torch.randn(3))
        norm.running_var.copy_(torch.rand(3) + 0.5)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, bias=False), norm, nn.ELU(), nn.Flatten(),
                          nn.Linear(27, 2)).double().eval()
    torch_export(model, (1, 1, 5, 5), tmp_path / "legacy.onnx", torch.float64,
                 do_constant_folding=False)
    dynamo_export(model, (1, 1, 5, 5), tmp_path / "dynamo.onnx", torch.float64, optimize=False)
    assert {"CastLike", "Mul"} <= {node.op_type
                                   for node in onnx.load(tmp_path / "dynamo.onnx").graph.node}
    x = np.random.default_rng(6).normal(size=(3, 1, 5, 5))
    for name in ("legacy", "dynamo"):
        net = g.Network.from_onnx(tmp_path / f"{name}.onnx")
        assert [type(layer).__name__ for layer in net.layers] == [
            "Convolution", "BatchNorm", "Elu", "Reshape", "FullyConnected"]
        np.testing.assert_allclose(g.run_net(net, x), model(torch.tensor(x)).detach().numpy(),
                                   rtol=1e-12, atol=1e-14)
    dynamo_export(model, (1, 1, 5, 5), tmp_path / "folded.onnx", torch.float64)
    with pytest.raises(ModelFileError, match=r"\(Conv\) has a bias, .* into a bias, unless given "
                       r"do_constant_folding=False, or optimize=False with dynamo=True\)$"):
        g.Network.from_onnx(tmp_path / "folded.onnx")


def test_what_cannot_be_read_is_named(tmp_path):
    torch = pytest.importorskip("torch", reason="PyTorch's exporter writes these models")
    nn = torch.nn
    torch_export(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()), (1, 1, 5, 5), tmp_path / "a")
    with pytest.raises(ModelFileError, match=r"node '.*' \(Conv\) has a bias, which grenade_py's "
                                             r"\(Grenade's\) convolutions do not"):
        g.Network.from_onnx(tmp_path / "a")
    torch_export(nn.Sequential(nn.Conv2d(1, 2, 3, bias=False), nn.AvgPool2d(3)), (1, 1, 5, 5),
                 tmp_path / "b")
    with pytest.raises(ModelFileError, match=r"node '.*' \(AveragePool\) has no grenade_py layer"):
        g.Network.from_onnx(tmp_path / "b")
    for name, layer in (("dilated", nn.Conv2d(1, 2, 3, dilation=2, bias=False)),
                        ("padded pool", nn.MaxPool2d(2, padding=1))):
        torch_export(nn.Sequential(layer), (1, 1, 6, 6), tmp_path / name)
        with pytest.raises(ModelFileError, match=r"only undilated, ungrouped windows are read, "
                           r"padded by zeros \(a MaxPool's unpadded\)$"):
            g.Network.from_onnx(tmp_path / name)
    helper, tensor = onnx.helper, onnx.TensorProto.FLOAT
    constant = helper.make_tensor("v", tensor, [1], [1.0])
    onnx.save(helper.make_model(helper.make_graph(
        [helper.make_node("Constant", [], ["c"], value=constant),
         helper.make_node("Unheard", ["c"], ["d"]), helper.make_node("Relu", ["x"], ["y"])],
        "g", [helper.make_tensor_value_info("x", tensor, ["n", 3])],
        [helper.make_tensor_value_info("y", tensor, ["n", 3])])), tmp_path / "d")
    with pytest.raises(ModelFileError, match=r"node '' \(Unheard\) of constants alone could not "
                       "be computed: No registered schema for operator 'Unheard'"):
        g.Network.from_onnx(tmp_path / "d")
    (tmp_path / "c").write_bytes(b"\x01\x02not a model")
    with pytest.raises(ModelFileError, match="is not an ONNX model"):
        g.Network.from_onnx(tmp_path / "c")


def test_a_damaged_export_is_a_model_file_error(tmp_path):
    """grenade_py's own export with its spec or a tensor damaged: a ModelFileError naming the
    file (they were JSONDecodeError, UnicodeDecodeError or numpy's ValueError)."""
    net = feedforward_network(get_device("float32"), seed=1)
    net.to_onnx(tmp_path / "ff.onnx")
    spec = next(p for p in onnx.load(tmp_path / "ff.onnx").metadata_props
                if p.key == "grenade_py.spec").value
    damages = {
        "json": lambda m: _set_spec(m, spec[:-3]),
        "type": lambda m: _set_spec(m, spec.replace('"FullyConnected"', '"FullyConnecteh"', 1)),
        "tensor": _cut_first_tensor,
    }
    for name, damage in damages.items():
        model = onnx.load(tmp_path / "ff.onnx")
        damage(model)
        path = tmp_path / f"{name}.onnx"
        path.write_bytes(model.SerializeToString())
        with pytest.raises(ModelFileError, match=f"^{re.escape(str(path))}: "):
            g.Network.from_onnx(path)


def _set_spec(model, text):
    next(p for p in model.metadata_props if p.key == "grenade_py.spec").value = text


def _cut_first_tensor(model):
    tensor = model.graph.initializer[0]
    assert len(tensor.raw_data) > 4
    tensor.raw_data = tensor.raw_data[:4]


def test_export_cli(tmp_path):
    net = feedforward_network(get_device("float32"), seed=1)
    net.save(tmp_path / "ff.gnpy")
    runner = CliRunner()
    result = runner.invoke(export_main, [str(tmp_path / "ff.gnpy"), str(tmp_path / "ff.onnx")])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and "opset 18" in result.output
    x = np.random.default_rng(1).uniform(size=(5, 2)).astype(np.float32)
    (got,) = run_onnx(tmp_path / "ff.onnx", {"input": x}, False)
    np.testing.assert_allclose(got, g.run_net(net, x), atol=1e-6)
    # The IR version that opset 18 needs (8), not the onnx package's newest: ONNX Runtimes
    # older than the onnx package refuse newer ones.
    assert onnx.load(tmp_path / "ff.onnx").ir_version == 8
    rnn = shakespeare_network(5, get_device("float32"), seed=1)
    rnn.save(tmp_path / "rnn.gnpy")
    result = runner.invoke(export_main, [str(tmp_path / "rnn.gnpy"), str(tmp_path / "r.onnx")])
    assert result.exit_code == 2 and "give --steps T" in result.output
    result = runner.invoke(export_main, [str(tmp_path / "rnn.gnpy"), str(tmp_path / "r.onnx"),
                                         "--steps", "4"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(export_main, [str(tmp_path / "missing"), str(tmp_path / "x.onnx")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert not (tmp_path / "x.onnx").exists()
