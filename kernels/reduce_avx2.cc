// AVX2 reductions, 8 lanes; the twin of reduce_avx512.cc (leaves of up to 256 terms in
// 4 x 8 lane accumulators).
#include <tessera/kernels/reduce.h>
#include <tessera/kernels/vec_math_avx2.h>

#include <algorithm>
#include <limits>

namespace tessera::kernels {
namespace {

using v256::kLanes;

constexpr size_t kLeaf = 256;
constexpr size_t kRowLeaf = 16;
constexpr size_t kTile = 256;

template <bool kSquare>
inline __m256 term(__m256 v, __m256 acc) {
  return kSquare ? _mm256_fmadd_ps(v, v, acc) : _mm256_add_ps(v, acc);
}

template <bool kSquare>
float leaf_sum(const float* x, size_t n) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  size_t i = 0;
  for (; i + 4 * kLanes <= n; i += 4 * kLanes) {
    a0 = term<kSquare>(_mm256_loadu_ps(x + i), a0);
    a1 = term<kSquare>(_mm256_loadu_ps(x + i + 8), a1);
    a2 = term<kSquare>(_mm256_loadu_ps(x + i + 16), a2);
    a3 = term<kSquare>(_mm256_loadu_ps(x + i + 24), a3);
  }
  for (; i + kLanes <= n; i += kLanes) a0 = term<kSquare>(_mm256_loadu_ps(x + i), a0);
  if (i < n) a1 = term<kSquare>(v256::load_tail(x + i, n - i), a1);
  return v256::hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
}

template <bool kSquare>
float pairwise(const float* x, size_t n) {
  if (n <= kLeaf) return leaf_sum<kSquare>(x, n);
  size_t h = (n / 2) & ~size_t{31};
  return pairwise<kSquare>(x, h) + pairwise<kSquare>(x + h, n - h);
}

void sum_rows(const float* x, size_t rows, size_t ld, size_t w, float* out) {
  if (rows <= kRowLeaf) {
    size_t i = 0;
    for (; i + kLanes <= w; i += kLanes) {
      __m256 acc = _mm256_loadu_ps(x + i);
      for (size_t r = 1; r < rows; ++r) acc = _mm256_add_ps(acc, _mm256_loadu_ps(x + r * ld + i));
      _mm256_storeu_ps(out + i, acc);
    }
    if (i < w) {
      __m256 acc = v256::load_tail(x + i, w - i);
      for (size_t r = 1; r < rows; ++r) acc = _mm256_add_ps(acc, v256::load_tail(x + r * ld + i, w - i));
      v256::store_tail(out + i, w - i, acc);
    }
    return;
  }
  size_t h = rows / 2;
  alignas(32) float tmp[kTile];
  sum_rows(x, h, ld, w, out);
  sum_rows(x + h * ld, rows - h, ld, w, tmp);
  size_t i = 0;
  for (; i + kLanes <= w; i += kLanes) {
    _mm256_storeu_ps(out + i, _mm256_add_ps(_mm256_loadu_ps(out + i), _mm256_loadu_ps(tmp + i)));
  }
  for (; i < w; ++i) out[i] += tmp[i];
}

void sum_strided_256(const float* x, float* y, size_t axis, size_t width, size_t ld) {
  if (width == 1 && ld == 1) {
    y[0] = pairwise<false>(x, axis);
    return;
  }
  for (size_t c = 0; c < width; c += kTile) sum_rows(x + c, axis, ld, std::min(kTile, width - c), y + c);
}

float sum_squares_256(const float* x, size_t n) { return pairwise<true>(x, n); }

float amax_256(const float* x, size_t n) {
  __m256 m0 = _mm256_setzero_ps(), m1 = m0, nan = m0;
  size_t i = 0;
  for (; i + 2 * kLanes <= n; i += 2 * kLanes) {
    __m256 a = v256::abs(_mm256_loadu_ps(x + i));
    __m256 b = v256::abs(_mm256_loadu_ps(x + i + kLanes));
    nan = _mm256_or_ps(nan, _mm256_cmp_ps(a, b, _CMP_UNORD_Q));
    m0 = _mm256_max_ps(m0, a);
    m1 = _mm256_max_ps(m1, b);
  }
  for (; i < n; i += kLanes) {
    __m256 a = v256::abs(v256::load_tail(x + i, n - i));
    nan = _mm256_or_ps(nan, _mm256_cmp_ps(a, a, _CMP_UNORD_Q));
    m0 = _mm256_max_ps(m0, a);
  }
  if (_mm256_movemask_ps(nan)) return std::numeric_limits<float>::quiet_NaN();
  return v256::hmax(_mm256_max_ps(m0, m1));
}

const ReduceFns k256 = {sum_strided_256, sum_squares_256, amax_256};
}  // namespace

const ReduceFns* reduce_fns_avx2() { return &k256; }

}  // namespace tessera::kernels
