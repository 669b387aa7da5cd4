"""Built-in models (runtime/models.h), as tessera.nn.Module objects.

    net = tessera.models.make_model("cnn", seed=1)    # input [B, 28, 28, 1], 10 classes
    tessera.models.model_names()                      # ['mlp', 'cnn', 'transformer']
"""
from ._tessera import models as _models

Mlp = _models.Mlp
Cnn = _models.Cnn
TransformerLm = _models.TransformerLm
make_model = _models.make_model
model_names = _models.model_names

__all__ = ["Mlp", "Cnn", "TransformerLm", "make_model", "model_names"]
