// AVX-512 softmax, 16 lanes, three passes per row (max; exp, store and sum; scale). The exp of
// vec_math_avx512.h is within 2 ulp; sums accumulate per 1024-element block and blocks are added
// into a second accumulator, which keeps long rows (vocabularies) accurate.
#include <tessera/kernels/softmax.h>
#include <tessera/kernels/vec_math_avx512.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace tessera::kernels {
namespace {

using v512::kLanes;
using v512::tail_mask;

constexpr size_t kBlock = 1024;

float row_max(const float* x, size_t n) {
  const __m512 ninf = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  __m512 m0 = ninf, m1 = ninf;
  size_t i = 0;
  for (; i + 2 * kLanes <= n; i += 2 * kLanes) {
    m0 = _mm512_max_ps(m0, _mm512_loadu_ps(x + i));
    m1 = _mm512_max_ps(m1, _mm512_loadu_ps(x + i + kLanes));
  }
  for (; i < n; i += kLanes) m1 = _mm512_max_ps(m1, _mm512_mask_loadu_ps(ninf, tail_mask(n - i), x + i));
  return std::max(v512::hmax(m0), v512::hmax(m1));
}

// y[i] = exp(x[i] - m); returns the sum. In place allowed.
float exp_store_sum(const float* x, float* y, size_t n, float m) {
  const __m512 vm = _mm512_set1_ps(m);
  __m512 total = _mm512_setzero_ps();
  for (size_t b = 0; b < n; b += kBlock) {
    const size_t e = b + kBlock < n ? b + kBlock : n;
    __m512 a0 = _mm512_setzero_ps(), a1 = a0;
    size_t i = b;
    for (; i + 2 * kLanes <= e; i += 2 * kLanes) {
      __m512 u = v512::exp(_mm512_sub_ps(_mm512_loadu_ps(x + i), vm));
      __m512 v = v512::exp(_mm512_sub_ps(_mm512_loadu_ps(x + i + kLanes), vm));
      _mm512_storeu_ps(y + i, u);
      _mm512_storeu_ps(y + i + kLanes, v);
      a0 = _mm512_add_ps(a0, u);
      a1 = _mm512_add_ps(a1, v);
    }
    for (; i < e; i += kLanes) {
      __mmask16 k = tail_mask(e - i);
      __m512 u = _mm512_maskz_mov_ps(k, v512::exp(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + i), vm)));
      _mm512_mask_storeu_ps(y + i, k, u);
      a0 = _mm512_add_ps(a0, u);
    }
    total = _mm512_add_ps(total, _mm512_add_ps(a0, a1));
  }
  return v512::hsum(total);
}

void scale_row(float* y, size_t n, float s) {
  const __m512 vs = _mm512_set1_ps(s);
  size_t i = 0;
  for (; i + kLanes <= n; i += kLanes) _mm512_storeu_ps(y + i, _mm512_mul_ps(_mm512_loadu_ps(y + i), vs));
  if (i < n) {
    __mmask16 k = tail_mask(n - i);
    _mm512_mask_storeu_ps(y + i, k, _mm512_mul_ps(_mm512_maskz_loadu_ps(k, y + i), vs));
  }
}

// Softmax of one row; returns logsumexp in double.
double softmax_row(const float* x, float* y, size_t n) {
  const float m = row_max(x, n);
  const float s = exp_store_sum(x, y, n, m);
  scale_row(y, n, 1.0f / s);
  return std::log(static_cast<double>(s)) + m;
}

void softmax_512(const float* x, float* y, size_t rows, size_t cols) {
  for (size_t r = 0; r < rows; ++r) softmax_row(x + r * cols, y + r * cols, cols);
}

void softmax_backward_512(const float* y, const float* dy, float* dx, size_t rows, size_t cols) {
  for (size_t r = 0; r < rows; ++r) {
    const float* yr = y + r * cols;
    const float* gr = dy + r * cols;
    float* dr = dx + r * cols;
    __m512 total = _mm512_setzero_ps();
    for (size_t b = 0; b < cols; b += kBlock) {
      const size_t e = b + kBlock < cols ? b + kBlock : cols;
      __m512 acc = _mm512_setzero_ps();
      for (size_t i = b; i < e; i += kLanes) {
        __mmask16 k = tail_mask(e - i);
        acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(k, yr + i), _mm512_maskz_loadu_ps(k, gr + i), acc);
      }
      total = _mm512_add_ps(total, acc);
    }
    const __m512 d = _mm512_set1_ps(v512::hsum(total));
    for (size_t i = 0; i < cols; i += kLanes) {
      __mmask16 k = tail_mask(cols - i);
      __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, yr + i), _mm512_sub_ps(_mm512_maskz_loadu_ps(k, gr + i), d));
      _mm512_mask_storeu_ps(dr + i, k, v);
    }
  }
}

double xent_forward_512(const float* logits, const int32_t* labels, float* probs, size_t rows,
                        size_t cols) {
  double total = 0;
  for (size_t r = 0; r < rows; ++r) {
    const float xl = logits[r * cols + labels[r]];  // read before probs may overwrite it
    total += softmax_row(logits + r * cols, probs + r * cols, cols) - xl;
  }
  return total;
}

void xent_backward_512(const float* probs, const int32_t* labels, float scale, float* dlogits,
                       size_t rows, size_t cols) {
  const __m512 vs = _mm512_set1_ps(scale);
  for (size_t r = 0; r < rows; ++r) {
    const float* p = probs + r * cols;
    float* d = dlogits + r * cols;
    const float pl = p[labels[r]];
    for (size_t i = 0; i < cols; i += kLanes) {
      __mmask16 k = tail_mask(cols - i);
      _mm512_mask_storeu_ps(d + i, k, _mm512_mul_ps(_mm512_maskz_loadu_ps(k, p + i), vs));
    }
    d[labels[r]] = (pl - 1.0f) * scale;
  }
}

const SoftmaxFns k512 = {softmax_512, softmax_backward_512, xent_forward_512, xent_backward_512};
}  // namespace

const SoftmaxFns* softmax_fns_avx512() { return &k512; }

}  // namespace tessera::kernels
