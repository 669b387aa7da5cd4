"""tessera: distributed training for a Dojo-like mesh accelerator, emulated on CPUs.

    import numpy as np, tessera
    x = tessera.Tensor.from_numpy(np.random.randn(4, 8).astype(np.float32))
    xb = x.to("bf16")                      # round to nearest even
    x8 = x.to("cfp8_e4m3", bias=9)         # Tesla's configurable 8-bit float
    print(x8, x8.numpy(), x8.codes())      # decoded float32 values, raw uint8 codes
    print(tessera.info())

Errors raise ValueError, TypeError, IndexError, NotImplementedError, MemoryError, OSError,
TimeoutError or tessera.CommError, as the C++ library's exception hierarchy maps them.
"""
from ._tessera import *  # noqa: F401,F403
from ._tessera import __version__, CommError  # noqa: F401
