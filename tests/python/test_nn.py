"""tessera.nn from Python: tracing, Python-subclassed modules, parameters, errors."""
import gc

import numpy as np
import pytest

import tessera
from tessera import nn


class Mlp(nn.Module):
    def __init__(self, seed=1, features=16, hidden=32, classes=4):
        super().__init__()
        self.fc1 = self.add_module("fc1", nn.Linear(features, hidden, seed=seed))
        self.fc2 = self.add_module("fc2", nn.Linear(hidden, classes, seed=seed + 1))

    def forward(self, x):
        return self.fc2(nn.relu(self.fc1(x)))


class Block(nn.Module):
    """A residual block with its own parameter, used below as an unreferenced child."""

    def __init__(self, dim, seed):
        super().__init__()
        self.fc = self.add_module("fc", nn.Linear(dim, dim, seed=seed))
        self.add_parameter("gate", np.full((dim, dim), 0.5, np.float32))

    def forward(self, x):
        return x + nn.matmul(self.fc(x), self.param("gate"))


class Deep(nn.Module):
    """The Blocks are Python subclasses held only by the (C++) Sequential."""

    def __init__(self):
        super().__init__()
        self.stem = self.add_module("stem", nn.Linear(8, 16, seed=1))
        self.blocks = self.add_module("blocks", nn.Sequential(Block(16, seed=2), nn.GELU(), Block(16, seed=3)))
        self.head = self.add_module("head", nn.Linear(16, 3, seed=4))

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)))


def test_trace_records_a_python_module():
    net = Mlp()
    with nn.Trace("bf16") as t:
        assert t.recording and t.precision == "bf16"
        x = t.input("x", [8, 16])
        logits = net(x)
        loss = nn.cross_entropy(logits, t.input("y", [8], "i32"))
    assert not t.recording
    assert logits.shape == (8, 4) and logits.dtype == tessera.DType.f32
    assert loss.shape == ()
    text = str(t.graph())
    assert text == t.graph().str()
    assert "fc1.weight" in text and "@fc2" in text and 'precision="bf16"' in text and "softmax_xent" in text
    assert t.graph().num_nodes > 4


def test_var_arithmetic_and_functions():
    with nn.Trace() as t:
        a = t.input("a", [4, 6])
        b = t.input("b", [4, 6])
        w = t.input("w", [6, 3])
        assert (a + b).shape == (4, 6)
        assert (a - b).shape == (4, 6)
        assert (a * b).shape == (4, 6)
        assert (a * 2.0).shape == (2.0 * a).shape == (a / 4).shape == (-a).shape == (4, 6)
        assert (a @ w).shape == nn.matmul(a, w).shape == (4, 3)
        assert nn.matmul(a, b, trans_b=True).shape == (4, 4)
        assert nn.relu(a).shape == nn.gelu(a).shape == (4, 6)
        assert nn.reshape(a, [2, -1]).shape == (2, 12)
        assert nn.flatten(nn.reshape(a, [4, 2, 3])).shape == (4, 6)
        assert nn.mse_loss(a, b).shape == ()
        assert repr(a) == "Var([4, 6], f32)"
        with pytest.raises(TypeError):
            a + "x"
    assert "scale" in str(t.graph())


def test_named_parameters_follow_the_module_tree():
    net = Mlp()
    params = net.named_parameters()
    assert list(params) == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    assert params["fc1.weight"].shape == (16, 32) and params["fc1.weight"].dtype == np.float32
    assert params["fc2.bias"].shape == (4,)
    deep = Deep()
    assert list(deep.named_parameters()) == [
        "stem.weight", "stem.bias",
        "blocks.0.gate", "blocks.0.fc.weight", "blocks.0.fc.bias",
        "blocks.2.gate", "blocks.2.fc.weight", "blocks.2.fc.bias",
        "head.weight", "head.bias",
    ]
    # The same names end up in the traced graph.
    with nn.Trace() as t:
        Deep()(t.input("x", [2, 8]))
    assert "blocks.2.fc.weight" in str(t.graph())


def test_named_parameters_are_copies_and_load_parameters_sets_them():
    net = Mlp(seed=1)
    before = net.named_parameters()
    before["fc1.weight"][:] = 0
    assert net.named_parameters()["fc1.weight"].any()
    other = Mlp(seed=7).named_parameters()
    net.load_parameters(other)
    for name, value in net.named_parameters().items():
        assert np.array_equal(value, other[name])
    # All-or-nothing: a bad entry changes nothing.
    bad = dict(other, **{"fc2.bias": np.zeros(5, np.float32), "fc1.bias": np.zeros(32)})
    with pytest.raises(ValueError, match=r"'fc2.bias' has shape \[4\], got \[5\]"):
        net.load_parameters(bad)
    assert np.array_equal(net.named_parameters()["fc1.bias"], other["fc1.bias"])
    with pytest.raises(ValueError, match="no value for parameter 'fc2.bias'"):
        net.load_parameters({k: v for k, v in other.items() if k != "fc2.bias"})
    with pytest.raises(ValueError, match="no parameter 'fc3.weight'"):
        net.load_parameters(dict(other, **{"fc3.weight": np.zeros(1)}))
    net.load_parameters({"fc1.bias": np.ones(32)}, strict=False)  # float64 is converted
    assert np.array_equal(net.named_parameters()["fc1.bias"], np.ones(32, np.float32))


def test_attribute_modules_register_themselves():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(16, 8, seed=1)  # as if add_module("fc1", ...)
            self.fc2 = self.add_module("fc2", nn.Linear(8, 4, seed=2))  # registered once
            self.same = self.fc2  # already registered: not again
            self._scratch = nn.Linear(4, 4, seed=3)  # private: not registered
            self.width = 8

        def forward(self, x):
            return self.fc2(nn.relu(self.fc1(x)))

    net = Net()
    assert list(net.named_parameters()) == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    assert net.width == 8 and isinstance(net.fc1, nn.Linear)
    with pytest.raises(ValueError, match="'fc1' is already registered"):
        net.fc1 = nn.Linear(16, 8, seed=4)


def test_python_children_survive_without_python_references():
    deep = Deep()  # its Blocks are referenced only by the C++ Sequential
    gc.collect()
    with nn.Trace() as t:
        y = deep(t.input("x", [5, 8]))
    assert y.shape == (5, 3)
    assert str(t.graph()).count("@blocks.0") > 0


def test_trace_misuse_raises_value_error():
    t = nn.Trace()
    with pytest.raises(ValueError, match="not recording"):
        t.input("x", [2, 16])
    with pytest.raises(ValueError, match="nothing traced"):
        t.graph()
    with t:
        x = t.input("x", [2, 16])
    with pytest.raises(ValueError, match="not recording"):
        t.input("y", [2])
    with pytest.raises(ValueError, match="entered only once"):
        with t:
            pass
    # The Var outlives its `with` block, but calling a module needs an active trace.
    with pytest.raises(ValueError, match="no active nn::Trace"):
        Mlp()(x)
    with pytest.raises(ValueError, match="precision"):
        nn.Trace("fp16")


def test_nested_traces():
    net = Mlp()
    with nn.Trace() as outer:
        a = outer.input("x", [2, 16])
        with nn.Trace("bf16") as inner:
            b = net(inner.input("x", [3, 16]))
        c = net(a)
    assert b.shape == (3, 4) and c.shape == (2, 4)
    assert "bf16" in str(inner.graph()) and "bf16" not in str(outer.graph())


def test_shape_error_names_the_layer_and_the_shapes():
    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = self.add_module("fc1", nn.Linear(16, 128, seed=1))
            self.fc2 = self.add_module("fc2", nn.Linear(64, 10, seed=2))

        def forward(self, x):
            return self.fc2(nn.relu(self.fc1(x)))

    with nn.Trace() as t:
        with pytest.raises(ValueError, match=r"Linear layer 'fc2' expects input \[batch, 64\], got \[8, 128\]"):
            Broken()(t.input("x", [8, 16]))
        with pytest.raises(ValueError, match=r"matmul.*\[8, 16\].*\[8, 16\]"):
            nn.matmul(t.input("a", [8, 16]), t.input("b", [8, 16]))


def test_forward_contract_errors():
    class NoForward(nn.Module):
        pass

    class ReturnsNumber(nn.Module):
        def forward(self, x):
            return 3

    class NoSuperInit(nn.Module):
        def __init__(self):
            pass

    with nn.Trace() as t:
        x = t.input("x", [2, 4])
        with pytest.raises(NotImplementedError, match="NoForward.*must define forward"):
            NoForward()(x)
        with pytest.raises(TypeError, match="ReturnsNumber.forward\\(\\) returned int"):
            ReturnsNumber()(x)
    with pytest.raises(TypeError, match="__init__"):
        NoSuperInit()

    class LateSuperInit(nn.Module):
        def __init__(self):
            self.fc = nn.Linear(2, 2, seed=1)
            super().__init__()

    class LateAddModule(nn.Module):
        def __init__(self):
            self.add_module("fc", nn.Linear(2, 2, seed=1))
            super().__init__()

    for cls in (LateSuperInit, LateAddModule):
        with pytest.raises(TypeError, match="used before Module.__init__\\(\\): call super"):
            cls()
    with pytest.raises(TypeError, match="built-in module"):
        nn.Linear(2, 2, seed=1).add_module("x", nn.ReLU())
    with pytest.raises(TypeError, match="expected a tessera.nn.Module"):
        Mlp().add_module("x", 3)
    with pytest.raises(TypeError):

        class MyLinear(nn.Linear):  # built-in layers are final
            pass


def traced_shape(module, shape, dtype="f32"):
    # One root module per trace: two roots would both name their parameters "weight".
    with nn.Trace() as t:
        return module(t.input("x", shape, dtype)).shape


def test_builtin_layers_trace_with_the_expected_shapes():
    img, seq = [2, 8, 8, 3], [2, 5, 16]
    assert traced_shape(nn.Conv2d(3, 4, 3, seed=1, padding=1), img) == (2, 8, 8, 4)
    assert traced_shape(nn.Conv2d(3, 4, 3, seed=1, stride=2), img) == (2, 3, 3, 4)
    assert traced_shape(nn.MaxPool2d(2), img) == (2, 4, 4, 3)
    assert traced_shape(nn.AvgPool2d(2, stride=1), img) == (2, 7, 7, 3)
    assert traced_shape(nn.Flatten(), img) == (2, 192)
    assert traced_shape(nn.ReLU(), seq) == traced_shape(nn.GELU(), seq) == (2, 5, 16)
    assert traced_shape(nn.LayerNorm(16), seq) == (2, 5, 16)
    assert traced_shape(nn.Embedding(10, 16, seed=1), [2, 5], "i32") == (2, 5, 16)
    assert traced_shape(nn.Dropout(0.1), seq) == (2, 5, 16)
    assert traced_shape(nn.MultiHeadSelfAttention(16, 4, seed=1), seq) == (2, 5, 16)
    assert traced_shape(nn.TransformerBlock(16, 2, seed=1), seq) == (2, 5, 16)
    s = nn.Sequential(nn.Flatten(), nn.Linear(192, 10, seed=1))
    s.add(nn.ReLU()).add(nn.Linear(10, 2, seed=2))
    assert traced_shape(s, img) == (2, 2)
    assert list(s.named_parameters()) == ["1.weight", "1.bias", "3.weight", "3.bias"]
    lin = nn.Linear(3, 5, seed=1, bias=False)
    assert (lin.in_features, lin.out_features) == (3, 5) and list(lin.named_parameters()) == ["weight"]
    assert not lin.eval().training and lin.train().training
    with pytest.raises(ValueError, match="feature counts must be positive"):
        nn.Linear(0, 3, seed=1)


def test_models():
    assert tessera.models.model_names() == ["mlp", "cnn", "transformer"]
    cnn = tessera.models.make_model("cnn", seed=1)
    assert isinstance(cnn, tessera.models.Cnn) and isinstance(cnn, nn.Module)
    assert list(cnn.named_parameters())[:2] == ["conv1.weight", "conv1.bias"]
    assert traced_shape(cnn, [2, 28, 28, 1]) == (2, 10)
    assert traced_shape(tessera.models.Mlp(1, 16, 8, 3), [4, 16]) == (4, 3)
    with pytest.raises(ValueError, match="unknown model 'resnet'.*mlp, cnn, transformer"):
        tessera.models.make_model("resnet")
