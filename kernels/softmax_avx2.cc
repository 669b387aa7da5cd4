// AVX2 softmax, 8 lanes; the twin of softmax_avx512.cc with vmaskmov tails.
#include <tessera/kernels/softmax.h>
#include <tessera/kernels/vec_math_avx2.h>

#include <cmath>
#include <limits>

namespace tessera::kernels {
namespace {

using v256::kLanes;

constexpr size_t kBlock = 1024;

float row_max(const float* x, size_t n) {
  const __m256 ninf = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  __m256 m0 = ninf, m1 = ninf;
  size_t i = 0;
  for (; i + 2 * kLanes <= n; i += 2 * kLanes) {
    m0 = _mm256_max_ps(m0, _mm256_loadu_ps(x + i));
    m1 = _mm256_max_ps(m1, _mm256_loadu_ps(x + i + kLanes));
  }
  for (; i < n; i += kLanes) {
    __m256 k = _mm256_castsi256_ps(v256::tail_mask(n - i));
    m0 = _mm256_max_ps(m0, _mm256_blendv_ps(ninf, v256::load_tail(x + i, n - i), k));
  }
  return v256::hmax(_mm256_max_ps(m0, m1));
}

float exp_store_sum(const float* x, float* y, size_t n, float m) {
  const __m256 vm = _mm256_set1_ps(m);
  __m256 total = _mm256_setzero_ps();
  for (size_t b = 0; b < n; b += kBlock) {
    const size_t e = b + kBlock < n ? b + kBlock : n;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0;
    size_t i = b;
    for (; i + 2 * kLanes <= e; i += 2 * kLanes) {
      __m256 u = v256::exp(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm));
      __m256 v = v256::exp(_mm256_sub_ps(_mm256_loadu_ps(x + i + kLanes), vm));
      _mm256_storeu_ps(y + i, u);
      _mm256_storeu_ps(y + i + kLanes, v);
      a0 = _mm256_add_ps(a0, u);
      a1 = _mm256_add_ps(a1, v);
    }
    for (; i < e; i += kLanes) {
      __m256 k = _mm256_castsi256_ps(v256::tail_mask(e - i));
      __m256 u = _mm256_and_ps(k, v256::exp(_mm256_sub_ps(v256::load_tail(x + i, e - i), vm)));
      v256::store_tail(y + i, e - i, u);
      a0 = _mm256_add_ps(a0, u);
    }
    total = _mm256_add_ps(total, _mm256_add_ps(a0, a1));
  }
  return v256::hsum(total);
}

void scale_row(float* y, size_t n, float s) {
  const __m256 vs = _mm256_set1_ps(s);
  size_t i = 0;
  for (; i + kLanes <= n; i += kLanes) _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_loadu_ps(y + i), vs));
  if (i < n) v256::store_tail(y + i, n - i, _mm256_mul_ps(v256::load_tail(y + i, n - i), vs));
}

double softmax_row(const float* x, float* y, size_t n) {
  const float m = row_max(x, n);
  const float s = exp_store_sum(x, y, n, m);
  scale_row(y, n, 1.0f / s);
  return std::log(static_cast<double>(s)) + m;
}

void softmax_256(const float* x, float* y, size_t rows, size_t cols) {
  for (size_t r = 0; r < rows; ++r) softmax_row(x + r * cols, y + r * cols, cols);
}

void softmax_backward_256(const float* y, const float* dy, float* dx, size_t rows, size_t cols) {
  for (size_t r = 0; r < rows; ++r) {
    const float* yr = y + r * cols;
    const float* gr = dy + r * cols;
    float* dr = dx + r * cols;
    __m256 total = _mm256_setzero_ps();
    for (size_t b = 0; b < cols; b += kBlock) {
      const size_t e = b + kBlock < cols ? b + kBlock : cols;
      __m256 acc = _mm256_setzero_ps();
      for (size_t i = b; i < e; i += kLanes) {
        acc = _mm256_fmadd_ps(v256::load_tail(yr + i, e - i), v256::load_tail(gr + i, e - i), acc);
      }
      total = _mm256_add_ps(total, acc);
    }
    const __m256 d = _mm256_set1_ps(v256::hsum(total));
    for (size_t i = 0; i < cols; i += kLanes) {
      __m256 v = _mm256_mul_ps(v256::load_tail(yr + i, cols - i),
                               _mm256_sub_ps(v256::load_tail(gr + i, cols - i), d));
      v256::store_tail(dr + i, cols - i, v);
    }
  }
}

double xent_forward_256(const float* logits, const int32_t* labels, float* probs, size_t rows,
                        size_t cols) {
  double total = 0;
  for (size_t r = 0; r < rows; ++r) {
    const float xl = logits[r * cols + labels[r]];
    total += softmax_row(logits + r * cols, probs + r * cols, cols) - xl;
  }
  return total;
}

void xent_backward_256(const float* probs, const int32_t* labels, float scale, float* dlogits,
                       size_t rows, size_t cols) {
  const __m256 vs = _mm256_set1_ps(scale);
  for (size_t r = 0; r < rows; ++r) {
    const float* p = probs + r * cols;
    float* d = dlogits + r * cols;
    const float pl = p[labels[r]];
    size_t i = 0;
    for (; i + kLanes <= cols; i += kLanes) _mm256_storeu_ps(d + i, _mm256_mul_ps(_mm256_loadu_ps(p + i), vs));
    if (i < cols) v256::store_tail(d + i, cols - i, _mm256_mul_ps(v256::load_tail(p + i, cols - i), vs));
    d[labels[r]] = (pl - 1.0f) * scale;
  }
}

const SoftmaxFns k256 = {softmax_256, softmax_backward_256, xent_forward_256, xent_backward_256};
}  // namespace

const SoftmaxFns* softmax_fns_avx2() { return &k256; }

}  // namespace tessera::kernels
