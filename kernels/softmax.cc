#include <tessera/kernels/softmax.h>

#include <tessera/core/error.h>
#include <tessera/kernels/dispatch.h>
#include <tessera/kernels/parallel_chunks.h>

#include <limits>
#include <vector>

namespace tessera::kernels {

#if !defined(TESSERA_HAVE_AVX2)
const SoftmaxFns* softmax_fns_avx2() { return nullptr; }
#endif
#if !defined(TESSERA_HAVE_AVX512)
const SoftmaxFns* softmax_fns_avx512() { return nullptr; }
#endif

namespace {
const Impl<SoftmaxFns>& pick() {
  static const Impl<SoftmaxFns> kList[] = {
      {"avx512", Isa::avx512, softmax_fns_avx512()},
      {"avx2", Isa::avx2, softmax_fns_avx2()},
      {"scalar", Isa::scalar, softmax_fns_scalar()},
  };
  return select("softmax", kList);
}

// exp costs ~20 flops per element.
size_t rows_per_chunk(size_t cols) { return units_per_chunk(cols * 4); }

void check_labels(const char* op, const int32_t* labels, size_t rows, size_t classes) {
  TESSERA_CHECK(rows == 0 || classes > 0, op, ": ", rows, " rows but 0 classes");
  for (size_t r = 0; r < rows; ++r) {
    int32_t l = labels[r];
    TESSERA_CHECK(l >= 0 && static_cast<size_t>(l) < classes, op, ": label ", l, " at row ", r,
                  " is out of range [0, ", classes, ")");
  }
}
}  // namespace

const SoftmaxFns& softmax_fns() { return *pick().fns; }
const char* softmax_impl_name() { return pick().name; }

void softmax(const float* x, float* y, size_t rows, size_t cols) {
  if (cols == 0) return;
  auto f = softmax_fns().softmax;
  for_each_chunk(rows, rows_per_chunk(cols), [&](size_t r0, size_t r1) {
    f(x + r0 * cols, y + r0 * cols, r1 - r0, cols);
  });
}

void softmax_backward(const float* y, const float* dy, float* dx, size_t rows, size_t cols) {
  if (cols == 0) return;
  auto f = softmax_fns().softmax_backward;
  for_each_chunk(rows, units_per_chunk(cols), [&](size_t r0, size_t r1) {
    f(y + r0 * cols, dy + r0 * cols, dx + r0 * cols, r1 - r0, cols);
  });
}

float softmax_cross_entropy(const float* logits, const int32_t* labels, float* probs, size_t rows,
                            size_t classes) {
  check_labels("softmax_cross_entropy", labels, rows, classes);
  if (rows == 0) return std::numeric_limits<float>::quiet_NaN();
  auto f = softmax_fns().xent_forward;
  const size_t per = rows_per_chunk(classes);
  std::vector<double> partial(chunk_count(rows, per));
  for_each_indexed_chunk(rows, per, [&](size_t c, size_t r0, size_t r1) {
    partial[c] = f(logits + r0 * classes, labels + r0, probs + r0 * classes, r1 - r0, classes);
  });
  double total = 0;
  for (double p : partial) total += p;
  return static_cast<float>(total / static_cast<double>(rows));
}

void softmax_cross_entropy_backward(const float* probs, const int32_t* labels, float dloss,
                                    float* dlogits, size_t rows, size_t classes) {
  check_labels("softmax_cross_entropy_backward", labels, rows, classes);
  if (rows == 0) return;
  const float scale = static_cast<float>(static_cast<double>(dloss) / static_cast<double>(rows));
  auto f = softmax_fns().xent_backward;
  for_each_chunk(rows, units_per_chunk(classes), [&](size_t r0, size_t r1) {
    f(probs + r0 * classes, labels + r0, scale, dlogits + r0 * classes, r1 - r0, classes);
  });
}

}  // namespace tessera::kernels
