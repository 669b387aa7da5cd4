// The reference rung, always built, the oracle in tests: row statistics in double.
#include <tessera/kernels/layernorm.h>

#include <cmath>

namespace tessera::kernels {
namespace {

void forward_ref(const float* x, const float* gamma, const float* beta, float* y, float* mean,
                 float* rstd, size_t rows, size_t cols, float eps) {
  for (size_t r = 0; r < rows; ++r) {
    const float* xr = x + r * cols;
    float* yr = y + r * cols;
    double s = 0;
    for (size_t i = 0; i < cols; ++i) s += xr[i];
    const double m = s / cols;
    double v = 0;
    for (size_t i = 0; i < cols; ++i) v += (xr[i] - m) * (xr[i] - m);
    const float mu = static_cast<float>(m);
    const float rs = static_cast<float>(1.0 / std::sqrt(v / cols + eps));
    mean[r] = mu;
    rstd[r] = rs;
    for (size_t i = 0; i < cols; ++i) yr[i] = (xr[i] - mu) * rs * gamma[i] + beta[i];
  }
}

void backward_ref(const float* x, const float* dy, const float* gamma, const float* mean,
                  const float* rstd, float* dx, float* dgamma_acc, float* dbeta_acc, size_t rows,
                  size_t cols) {
  for (size_t r = 0; r < rows; ++r) {
    const float* xr = x + r * cols;
    const float* gr = dy + r * cols;
    float* dr = dx + r * cols;
    const float mu = mean[r], rs = rstd[r];
    double a = 0, b = 0;
    for (size_t i = 0; i < cols; ++i) {
      const float xhat = (xr[i] - mu) * rs;
      const float g = gr[i] * gamma[i];
      a += g;
      b += static_cast<double>(g) * xhat;
      dgamma_acc[i] += gr[i] * xhat;
      dbeta_acc[i] += gr[i];
    }
    const float ma = static_cast<float>(a / cols), mb = static_cast<float>(b / cols);
    for (size_t i = 0; i < cols; ++i) {
      const float xhat = (xr[i] - mu) * rs;
      dr[i] = rs * (gr[i] * gamma[i] - ma - xhat * mb);  // reads dy before writing dx (in place)
    }
  }
}

const LayerNormFns kScalar = {forward_ref, backward_ref};
}  // namespace

const LayerNormFns* layernorm_fns_scalar() { return &kScalar; }

}  // namespace tessera::kernels
