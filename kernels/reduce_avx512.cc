// AVX-512 reductions, 16 lanes. Same pairwise structure as reduce_scalar.cc with wider leaves:
// a leaf of up to 512 terms is summed in 4 x 16 lane accumulators (8 terms per lane).
#include <tessera/kernels/reduce.h>
#include <tessera/kernels/vec_math_avx512.h>

#include <algorithm>
#include <limits>

namespace tessera::kernels {
namespace {

using v512::kLanes;
using v512::tail_mask;

constexpr size_t kLeaf = 512;
constexpr size_t kRowLeaf = 16;
constexpr size_t kTile = 256;

template <bool kSquare>
inline __m512 term(__m512 v, __m512 acc) {
  return kSquare ? _mm512_fmadd_ps(v, v, acc) : _mm512_add_ps(v, acc);
}

template <bool kSquare>
float leaf_sum(const float* x, size_t n) {
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  size_t i = 0;
  for (; i + 4 * kLanes <= n; i += 4 * kLanes) {
    a0 = term<kSquare>(_mm512_loadu_ps(x + i), a0);
    a1 = term<kSquare>(_mm512_loadu_ps(x + i + 16), a1);
    a2 = term<kSquare>(_mm512_loadu_ps(x + i + 32), a2);
    a3 = term<kSquare>(_mm512_loadu_ps(x + i + 48), a3);
  }
  for (; i + kLanes <= n; i += kLanes) a0 = term<kSquare>(_mm512_loadu_ps(x + i), a0);
  if (i < n) a1 = term<kSquare>(_mm512_maskz_loadu_ps(tail_mask(n - i), x + i), a1);
  return v512::hsum(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}

template <bool kSquare>
float pairwise(const float* x, size_t n) {
  if (n <= kLeaf) return leaf_sum<kSquare>(x, n);
  size_t h = (n / 2) & ~size_t{63};  // keep leaves vector-aligned relative to x
  return pairwise<kSquare>(x, h) + pairwise<kSquare>(x + h, n - h);
}

// out[i] = sum over r < rows of x[r * ld + i], i < w <= kTile.
void sum_rows(const float* x, size_t rows, size_t ld, size_t w, float* out) {
  if (rows <= kRowLeaf) {
    for (size_t i = 0; i < w; i += kLanes) {
      __mmask16 m = tail_mask(w - i);
      __m512 acc = _mm512_maskz_loadu_ps(m, x + i);
      for (size_t r = 1; r < rows; ++r) acc = _mm512_add_ps(acc, _mm512_maskz_loadu_ps(m, x + r * ld + i));
      _mm512_mask_storeu_ps(out + i, m, acc);
    }
    return;
  }
  size_t h = rows / 2;
  alignas(64) float tmp[kTile];
  sum_rows(x, h, ld, w, out);
  sum_rows(x + h * ld, rows - h, ld, w, tmp);
  for (size_t i = 0; i < w; i += kLanes) {
    __mmask16 m = tail_mask(w - i);
    _mm512_mask_storeu_ps(out + i, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, out + i),
                                                     _mm512_maskz_loadu_ps(m, tmp + i)));
  }
}

void sum_strided_512(const float* x, float* y, size_t axis, size_t width, size_t ld) {
  if (width == 1 && ld == 1) {
    y[0] = pairwise<false>(x, axis);
    return;
  }
  for (size_t c = 0; c < width; c += kTile) sum_rows(x + c, axis, ld, std::min(kTile, width - c), y + c);
}

float sum_squares_512(const float* x, size_t n) { return pairwise<true>(x, n); }

float amax_512(const float* x, size_t n) {
  __m512 m0 = _mm512_setzero_ps(), m1 = m0;
  __mmask16 nan = 0;
  size_t i = 0;
  for (; i + 2 * kLanes <= n; i += 2 * kLanes) {
    __m512 a = _mm512_abs_ps(_mm512_loadu_ps(x + i));
    __m512 b = _mm512_abs_ps(_mm512_loadu_ps(x + i + kLanes));
    nan |= _mm512_cmp_ps_mask(a, b, _CMP_UNORD_Q);
    m0 = _mm512_max_ps(m0, a);
    m1 = _mm512_max_ps(m1, b);
  }
  for (; i < n; i += kLanes) {
    __m512 a = _mm512_abs_ps(_mm512_maskz_loadu_ps(tail_mask(n - i), x + i));
    nan |= _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q);
    m0 = _mm512_max_ps(m0, a);
  }
  if (nan) return std::numeric_limits<float>::quiet_NaN();
  return v512::hmax(_mm512_max_ps(m0, m1));
}

const ReduceFns k512 = {sum_strided_512, sum_squares_512, amax_512};
}  // namespace

const ReduceFns* reduce_fns_avx512() { return &k512; }

}  // namespace tessera::kernels
