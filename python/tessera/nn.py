"""Symbolic values, traces, modules and layers: the same objects as tessera's C++ nn API.

    import tessera
    from tessera import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = self.add_module("fc1", nn.Linear(784, 128, seed=1))
            self.fc2 = self.add_module("fc2", nn.Linear(128, 10, seed=2))

        def forward(self, x):
            return self.fc2(nn.relu(self.fc1(x)))

    net = Net()
    with nn.Trace("bf16") as t:
        logits = net(t.input("x", [64, 784]))
    print(t.graph())
    net.named_parameters()            # {'fc1.weight': array(784, 128), ...}

add_module registers a child and returns it; assigning a module to a public attribute
(self.fc = nn.Linear(...)) registers it too. Modules only record graphs; tessera.Trainer runs
them. A Var is valid while its trace lives.
"""
from ._tessera import nn as _nn

Var = _nn.Var
Trace = _nn.Trace
Graph = _nn.Graph
Module = _nn.Module

relu = _nn.relu
gelu = _nn.gelu
flatten = _nn.flatten
reshape = _nn.reshape
matmul = _nn.matmul
cross_entropy = _nn.cross_entropy
mse_loss = _nn.mse_loss

Linear = _nn.Linear
Conv2d = _nn.Conv2d
MaxPool2d = _nn.MaxPool2d
AvgPool2d = _nn.AvgPool2d
ReLU = _nn.ReLU
GELU = _nn.GELU
Flatten = _nn.Flatten
LayerNorm = _nn.LayerNorm
Embedding = _nn.Embedding
Dropout = _nn.Dropout
MultiHeadSelfAttention = _nn.MultiHeadSelfAttention
TransformerBlock = _nn.TransformerBlock
Sequential = _nn.Sequential

__all__ = [
    "Var", "Trace", "Graph", "Module",
    "relu", "gelu", "flatten", "reshape", "matmul", "cross_entropy", "mse_loss",
    "Linear", "Conv2d", "MaxPool2d", "AvgPool2d", "ReLU", "GELU", "Flatten", "LayerNorm",
    "Embedding", "Dropout", "MultiHeadSelfAttention", "TransformerBlock", "Sequential",
]
