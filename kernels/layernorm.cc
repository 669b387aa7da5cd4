#include <tessera/kernels/layernorm.h>

#include <tessera/core/error.h>
#include <tessera/kernels/dispatch.h>
#include <tessera/kernels/parallel_chunks.h>

#include <algorithm>
#include <vector>

namespace tessera::kernels {

#if !defined(TESSERA_HAVE_AVX2)
const LayerNormFns* layernorm_fns_avx2() { return nullptr; }
#endif
#if !defined(TESSERA_HAVE_AVX512)
const LayerNormFns* layernorm_fns_avx512() { return nullptr; }
#endif

namespace {
const Impl<LayerNormFns>& pick() {
  static const Impl<LayerNormFns> kList[] = {
      {"avx512", Isa::avx512, layernorm_fns_avx512()},
      {"avx2", Isa::avx2, layernorm_fns_avx2()},
      {"scalar", Isa::scalar, layernorm_fns_scalar()},
  };
  return select("layer_norm", kList);
}

// The backward keeps one dgamma/dbeta partial per chunk: at most this many chunks.
constexpr size_t kMaxBackwardChunks = 64;
// Inside a chunk, rows are accumulated in blocks of this many before joining the chunk's
// partial, so no f32 accumulator sees more than ~rows / (64 * 32) + 32 additions.
constexpr size_t kRowBlock = 32;
}  // namespace

const LayerNormFns& layernorm_fns() { return *pick().fns; }
const char* layernorm_impl_name() { return pick().name; }

void layer_norm(const float* x, const float* gamma, const float* beta, float* y, float* mean,
                float* rstd, size_t rows, size_t cols, float eps) {
  TESSERA_CHECK(eps >= 0.0f, "layer_norm: eps must be >= 0, got ", eps);
  if (rows == 0) return;
  TESSERA_CHECK(cols > 0, "layer_norm: ", rows, " rows of 0 columns");
  std::vector<float> ones, zeros, mean_tmp, rstd_tmp;
  if (!gamma) gamma = (ones.assign(cols, 1.0f), ones.data());
  if (!beta) beta = (zeros.assign(cols, 0.0f), zeros.data());
  if (!mean) mean = (mean_tmp.resize(rows), mean_tmp.data());
  if (!rstd) rstd = (rstd_tmp.resize(rows), rstd_tmp.data());
  auto f = layernorm_fns().forward;
  for_each_chunk(rows, units_per_chunk(2 * cols), [&](size_t r0, size_t r1) {
    f(x + r0 * cols, gamma, beta, y + r0 * cols, mean + r0, rstd + r0, r1 - r0, cols, eps);
  });
}

void layer_norm_backward(const float* x, const float* dy, const float* gamma, const float* mean,
                         const float* rstd, float* dx, float* dgamma, float* dbeta, size_t rows,
                         size_t cols) {
  if (rows == 0) {
    if (dgamma) std::fill(dgamma, dgamma + cols, 0.0f);
    if (dbeta) std::fill(dbeta, dbeta + cols, 0.0f);
    return;
  }
  TESSERA_CHECK(cols > 0, "layer_norm_backward: ", rows, " rows of 0 columns");
  std::vector<float> ones;
  if (!gamma) gamma = (ones.assign(cols, 1.0f), ones.data());
  auto f = layernorm_fns().backward;
  const size_t per = std::max(units_per_chunk(3 * cols),
                              (rows + kMaxBackwardChunks - 1) / kMaxBackwardChunks);
  const size_t chunks = chunk_count(rows, per);
  std::vector<float> partial(chunks * 2 * cols, 0.0f);  // per chunk: dgamma, then dbeta
  for_each_indexed_chunk(rows, per, [&](size_t c, size_t r0, size_t r1) {
    float* pg = &partial[c * 2 * cols];
    float* pb = pg + cols;
    std::vector<float> block(2 * cols);
    for (size_t b = r0; b < r1; b += kRowBlock) {
      const size_t e = std::min(r1, b + kRowBlock);
      std::fill(block.begin(), block.end(), 0.0f);
      f(x + b * cols, dy + b * cols, gamma, mean + b, rstd + b, dx + b * cols, block.data(),
        block.data() + cols, e - b, cols);
      for (size_t i = 0; i < cols; ++i) {
        pg[i] += block[i];
        pb[i] += block[cols + i];
      }
    }
  });
  for (size_t i = 0; i < cols; ++i) {
    double g = 0, b = 0;
    for (size_t c = 0; c < chunks; ++c) {
      g += partial[c * 2 * cols + i];
      b += partial[c * 2 * cols + cols + i];
    }
    if (dgamma) dgamma[i] = static_cast<float>(g);
    if (dbeta) dbeta[i] = static_cast<float>(b);
  }
}

}  // namespace tessera::kernels
