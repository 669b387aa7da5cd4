import numpy as np
import pytest

import tessera


def bf16_reference(x):
    """Round-to-nearest-even f32 -> bf16 in numpy, NaN -> quiet NaN."""
    u = x.astype(np.float32).view(np.uint32)
    nan = (u & 0x7FFFFFFF) > 0x7F800000
    rounded = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    quiet = ((u >> 16) | 0x40).astype(np.uint16)
    return np.where(nan, quiet, rounded)


def test_bf16_matches_numpy_reference_on_random_bits():
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2**32, size=200_003, dtype=np.uint64).astype(np.uint32)
    x = bits.view(np.float32)
    assert np.array_equal(tessera.f32_to_bf16(x), bf16_reference(x))


def test_bf16_all_codes_round_trip():
    codes = np.arange(65536, dtype=np.uint32).astype(np.uint16)
    f = tessera.bf16_to_f32(codes)
    assert np.array_equal(f.view(np.uint32), codes.astype(np.uint32) << 16)
    back = tessera.f32_to_bf16(f)
    finite = ~np.isnan(f)
    assert np.array_equal(back[finite], codes[finite])
    assert np.all(np.isnan(tessera.bf16_to_f32(back[~finite])))


@pytest.mark.parametrize("layout", ["e4m3", "e5m2"])
@pytest.mark.parametrize("bias", [0, 7, 15, 40, 63])
def test_cfp8_codes_round_trip_and_nearest(layout, bias):
    codes = np.arange(256, dtype=np.uint16).astype(np.uint8)
    values = tessera.cfp8_decode(codes, layout, bias)
    assert np.all(np.isfinite(values))
    assert np.array_equal(tessera.cfp8_encode(values, layout, bias), codes)
    # Random values encode to the nearest decoded magnitude (brute force; ties are rare here).
    rng = np.random.default_rng(bias)
    x = (rng.standard_normal(5000) * tessera.cfp8_max(layout, bias) / 8).astype(np.float32)
    enc = tessera.cfp8_encode(x, layout, bias)
    mags = values[:128].astype(np.float64)
    dist = np.abs(np.abs(x.astype(np.float64))[:, None] - mags[None, :])
    best = dist.min(axis=1)
    got = np.abs(tessera.cfp8_decode(enc, layout, bias).astype(np.float64))
    assert np.array_equal(np.abs(got - np.abs(x)), best)


def test_cfp8_saturates_and_counts_nan():
    assert tessera.cfp8_max("e4m3", 7) == 480.0
    assert tessera.cfp8_max("e5m2", 15) == 114688.0
    enc = tessera.cfp8_encode(np.array([1e9, -np.inf], dtype=np.float32), "e4m3", 7)
    assert list(enc) == [0x7F, 0xFF]
    before = tessera.cfp8_invalid_count()
    tessera.cfp8_encode(np.array([np.nan] * 3, dtype=np.float32))
    assert tessera.cfp8_invalid_count() == before + 3


def test_stochastic_rounding_reproducible_and_unbiased():
    x = np.full(100_000, 1.1, dtype=np.float32)
    a = tessera.cfp8_encode(x, "e4m3", 7, rounding="stochastic", seed=5)
    b = tessera.cfp8_encode(x, "e4m3", 7, rounding="stochastic", seed=5)
    c = tessera.cfp8_encode(x, "e4m3", 7, rounding="stochastic", seed=6)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    mean = tessera.cfp8_decode(a, "e4m3", 7).astype(np.float64).mean()
    assert abs(mean - 1.1) < 6 * 0.125 / np.sqrt(x.size)


def test_bad_inputs_raise_python_exceptions():
    with pytest.raises(ValueError, match="bias 64"):
        tessera.cfp8_encode(np.zeros(3, dtype=np.float32), "e4m3", 64)
    with pytest.raises(ValueError, match="'e3m4'"):
        tessera.cfp8_encode(np.zeros(3, dtype=np.float32), "e3m4")
    with pytest.raises(ValueError, match="'float8'"):
        tessera.dtype_from_name("float8")
    with pytest.raises(ValueError, match="'sse9'"):
        tessera.set_isa_cap("sse9")


def test_dtype_table_ids_are_frozen():
    table = {row["name"]: row["id"] for row in tessera.dtype_table()}
    assert table == {"f32": 1, "bf16": 2, "cfp8_e4m3": 3, "cfp8_e5m2": 4, "i32": 5, "i64": 6}
