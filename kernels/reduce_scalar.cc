// The reference rung: pairwise summation in plain loops, always built, the oracle in tests.
#include <tessera/kernels/reduce.h>

#include <algorithm>
#include <cmath>

namespace tessera::kernels {
namespace {

constexpr size_t kLeaf = 32;      // terms summed directly
constexpr size_t kRowLeaf = 16;   // rows summed directly in the strided case
constexpr size_t kTile = 256;     // columns per pass in the strided case

template <typename Term>
float pairwise(const float* x, size_t n, Term term) {
  if (n <= kLeaf) {
    float s = 0.0f;
    for (size_t i = 0; i < n; ++i) s += term(x[i]);
    return s;
  }
  size_t h = n / 2;
  return pairwise(x, h, term) + pairwise(x + h, n - h, term);
}

// out[i] = sum over r < rows of x[r * ld + i], i < w <= kTile.
void sum_rows(const float* x, size_t rows, size_t ld, size_t w, float* out) {
  if (rows <= kRowLeaf) {
    for (size_t i = 0; i < w; ++i) out[i] = x[i];
    for (size_t r = 1; r < rows; ++r) {
      for (size_t i = 0; i < w; ++i) out[i] += x[r * ld + i];
    }
    return;
  }
  size_t h = rows / 2;
  float tmp[kTile];
  sum_rows(x, h, ld, w, out);
  sum_rows(x + h * ld, rows - h, ld, w, tmp);
  for (size_t i = 0; i < w; ++i) out[i] += tmp[i];
}

void sum_strided_ref(const float* x, float* y, size_t axis, size_t width, size_t ld) {
  if (width == 1 && ld == 1) {
    y[0] = pairwise(x, axis, [](float v) { return v; });
    return;
  }
  for (size_t c = 0; c < width; c += kTile) sum_rows(x + c, axis, ld, std::min(kTile, width - c), y + c);
}

float sum_squares_ref(const float* x, size_t n) {
  return pairwise(x, n, [](float v) { return v * v; });
}

float amax_ref(const float* x, size_t n) {
  float m = 0.0f;
  for (size_t i = 0; i < n; ++i) {
    if (std::isnan(x[i])) return x[i];
    m = std::max(m, std::fabs(x[i]));
  }
  return m;
}

const ReduceFns kScalar = {sum_strided_ref, sum_squares_ref, amax_ref};
}  // namespace

const ReduceFns* reduce_fns_scalar() { return &kScalar; }

}  // namespace tessera::kernels
