// The reference rung, always built, the oracle in tests: the textbook max-shifted softmax with
// row sums and dot products in double.
#include <tessera/kernels/softmax.h>

#include <algorithm>
#include <cmath>

namespace tessera::kernels {
namespace {

// y = exp(x - max(x)) / sum; returns log(sum) + max, i.e. logsumexp(x). In place allowed.
double softmax_row(const float* x, float* y, size_t n) {
  float m = x[0];
  for (size_t i = 1; i < n; ++i) m = std::max(m, x[i]);
  double s = 0;
  for (size_t i = 0; i < n; ++i) {
    y[i] = std::exp(x[i] - m);
    s += y[i];
  }
  const float inv = static_cast<float>(1.0 / s);
  for (size_t i = 0; i < n; ++i) y[i] *= inv;
  return std::log(s) + m;
}

void softmax_ref(const float* x, float* y, size_t rows, size_t cols) {
  for (size_t r = 0; r < rows; ++r) softmax_row(x + r * cols, y + r * cols, cols);
}

void softmax_backward_ref(const float* y, const float* dy, float* dx, size_t rows, size_t cols) {
  for (size_t r = 0; r < rows; ++r) {
    const float* yr = y + r * cols;
    const float* gr = dy + r * cols;
    float* dr = dx + r * cols;
    double dot = 0;
    for (size_t i = 0; i < cols; ++i) dot += static_cast<double>(yr[i]) * gr[i];
    const float d = static_cast<float>(dot);
    for (size_t i = 0; i < cols; ++i) dr[i] = yr[i] * (gr[i] - d);
  }
}

double xent_forward_ref(const float* logits, const int32_t* labels, float* probs, size_t rows,
                        size_t cols) {
  double total = 0;
  for (size_t r = 0; r < rows; ++r) {
    const float xl = logits[r * cols + labels[r]];  // read before probs may overwrite it
    total += softmax_row(logits + r * cols, probs + r * cols, cols) - xl;
  }
  return total;
}

void xent_backward_ref(const float* probs, const int32_t* labels, float scale, float* dlogits,
                       size_t rows, size_t cols) {
  for (size_t r = 0; r < rows; ++r) {
    const float* p = probs + r * cols;
    float* d = dlogits + r * cols;
    const float pl = p[labels[r]];
    for (size_t i = 0; i < cols; ++i) d[i] = p[i] * scale;
    d[labels[r]] = (pl - 1.0f) * scale;
  }
}

const SoftmaxFns kScalar = {softmax_ref, softmax_backward_ref, xent_forward_ref, xent_backward_ref};
}  // namespace

const SoftmaxFns* softmax_fns_scalar() { return &kScalar; }

}  // namespace tessera::kernels
