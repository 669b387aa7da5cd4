// The reference rung, always built, the oracle in tests. The normal CDF is evaluated in double
// through erfc, so it is correctly rounded to f32 in both tails (1 + erf would cancel).
#include <tessera/kernels/activation.h>

#include <cmath>

namespace tessera::kernels {
namespace {

constexpr double kInvSqrt2 = 0.70710678118654752440;
constexpr double kInvSqrt2Pi = 0.39894228040143267794;

inline double normal_cdf(double x) { return 0.5 * std::erfc(-x * kInvSqrt2); }

void relu_ref(const float* x, float* y, size_t n) {
  for (size_t i = 0; i < n; ++i) y[i] = x[i] < 0.0f ? 0.0f : x[i];
}
void relu_backward_ref(const float* x, const float* dy, float* dx, size_t n) {
  for (size_t i = 0; i < n; ++i) dx[i] = x[i] > 0.0f ? dy[i] : 0.0f;
}
void gelu_ref(const float* x, float* y, size_t n) {
  for (size_t i = 0; i < n; ++i) y[i] = static_cast<float>(x[i] * normal_cdf(x[i]));
}
void gelu_backward_ref(const float* x, const float* dy, float* dx, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    double v = x[i];
    double pdf = std::exp(-0.5 * v * v) * kInvSqrt2Pi;
    double d = normal_cdf(v) + (pdf > 0 ? v * pdf : 0.0);  // 0 * inf at |x| = inf
    dx[i] = static_cast<float>(dy[i] * d);
  }
}
void erf_ref(const float* x, float* y, size_t n) {
  for (size_t i = 0; i < n; ++i) y[i] = std::erf(x[i]);
}

const ActivationFns kScalar = {relu_ref, relu_backward_ref, gelu_ref, gelu_backward_ref, erf_ref};
}  // namespace

const ActivationFns* activation_fns_scalar() { return &kScalar; }

}  // namespace tessera::kernels
