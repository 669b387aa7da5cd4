"""tessera: distributed training for a Dojo-like mesh accelerator, emulated on CPUs.

    import numpy as np, tessera
    from tessera import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = self.add_module("fc1", nn.Linear(16, 64, seed=1))
            self.fc2 = self.add_module("fc2", nn.Linear(64, 4, seed=2))

        def forward(self, x):
            return self.fc2(nn.relu(self.fc1(x)))

    train = tessera.make_synthetic_classification(1024, 16, 4, seed=1)
    test = tessera.make_synthetic_classification(256, 16, 4, seed=1)
    trainer = tessera.Trainer(Net(), [16], 4, precision="bf16", epochs=5, batch_size=32, lr=0.1)
    trainer.fit(train, test)                # [{'epoch': 1, 'train_loss': ..., 'test_accuracy': ...}, ...]
    trainer.save_checkpoint("/tmp/ck")

Tensors and conversions:

    x = tessera.Tensor.from_numpy(np.random.randn(4, 8).astype(np.float32))
    x8 = x.to("cfp8_e4m3", bias=9)         # Tesla's configurable 8-bit float
    print(x8, x8.numpy(), x8.codes())      # decoded float32 values, raw uint8 codes
    print(tessera.info())

Errors raise ValueError, TypeError, IndexError, NotImplementedError, MemoryError, OSError,
TimeoutError or tessera.CommError, as the C++ library's exception hierarchy maps them.
"""
from ._tessera import *  # noqa: F401,F403
from ._tessera import __version__, CommError  # noqa: F401
from . import models, nn  # noqa: F401  (after the star import: these replace its raw submodules)
