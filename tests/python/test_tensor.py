import numpy as np
import pytest

import tessera


def test_numpy_round_trip_and_views():
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    t = tessera.Tensor.from_numpy(a)
    assert t.shape == (3, 4)
    assert t.dtype == tessera.DType.f32
    assert np.array_equal(t.numpy(), a)
    tt = t.transpose(0, 1)
    assert not tt.is_contiguous()
    assert np.array_equal(tt.numpy(), a.T)
    assert np.array_equal(t.slice(1, 1, 4, 2).numpy(), a[:, 1:4:2])
    assert np.array_equal(t.select(0, 2).numpy(), a[2])
    ints = tessera.Tensor.from_numpy(np.array([1, -2, 3], dtype=np.int64))
    assert ints.dtype == tessera.DType.i64
    assert ints.numpy().tolist() == [1, -2, 3]


def test_conversions():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((5, 7)).astype(np.float32) * 10
    t = tessera.Tensor.from_numpy(a)
    b = t.to("bf16")
    assert np.array_equal(b.codes(), tessera.f32_to_bf16(a))
    c = t.to("cfp8_e5m2", bias=12)
    assert c.bias == 12
    assert np.array_equal(c.codes(), tessera.cfp8_encode(a, "e5m2", 12))
    assert np.array_equal(c.numpy(), tessera.cfp8_decode(c.codes(), "e5m2", 12))
    assert "cfp8_e5m2(bias=12)" in repr(c)


def test_proto_round_trip():
    t = tessera.Tensor.normal([4, 3], seed=3, dtype="bf16")
    back = tessera.Tensor.from_proto_bytes(t.to_proto_bytes())
    assert back.dtype == tessera.DType.bf16
    assert np.array_equal(back.codes(), t.codes())


def test_errors():
    with pytest.raises(ValueError, match="dimension 0 is -1"):
        tessera.Tensor.zeros([-1, 2])
    with pytest.raises(TypeError, match="unsupported numpy dtype"):
        tessera.Tensor.from_numpy(np.zeros(3, dtype=np.complex64))
    with pytest.raises(IndexError):
        tessera.Tensor.zeros([2, 2]).select(0, 5)
    with pytest.raises(ValueError, match="not a tessera.proto.Tensor"):
        tessera.Tensor.from_proto_bytes(b"\xff\xff\xff")


def test_info_mentions_the_ladder_and_dtypes():
    text = tessera.info()
    assert "tessera " + tessera.__version__ in text
    for word in ("scalar", "avx2", "avx512", "cfp8_e4m3", "bf16", "mpi", "grpc"):
        assert word in text
    assert tessera.active_isa() in {"scalar", "avx2", "avx512", "avx512_bf16"}
