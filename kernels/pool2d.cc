#include <tessera/kernels/pool2d.h>

#include <tessera/core/error.h>
#include <tessera/kernels/dispatch.h>

#include <oneapi/tbb/blocked_range.h>
#include <oneapi/tbb/parallel_for.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>
#include <algorithm>

namespace tessera::kernels {

void pool2d_validate(const Pool2dDesc& p) {
  TESSERA_CHECK(p.N >= 0 && p.H > 0 && p.W > 0 && p.C > 0 && p.R > 0 && p.S > 0 && p.stride_h > 0 &&
                    p.stride_w > 0 && p.pad_h >= 0 && p.pad_w >= 0,
                "pool2d: bad descriptor N=", p.N, " H=", p.H, " W=", p.W, " C=", p.C, " window ", p.R, "x", p.S,
                " stride (", p.stride_h, ", ", p.stride_w, ") padding (", p.pad_h, ", ", p.pad_w, ")");
  TESSERA_CHECK(2 * p.pad_h <= p.R && 2 * p.pad_w <= p.S, "pool2d: padding (", p.pad_h, ", ", p.pad_w,
                ") must be at most half the window ", p.R, "x", p.S);
  TESSERA_CHECK(p.OH() > 0 && p.OW() > 0, "pool2d: window ", p.R, "x", p.S, " larger than the padded input ", p.H,
                "x", p.W);
}

#if !defined(TESSERA_HAVE_AVX512)
const Pool2dFns* pool2d_fns_avx512() { return nullptr; }
#endif

namespace {
const Impl<Pool2dFns>& pick() {
  static const Impl<Pool2dFns> kList[] = {
      {"avx512", Isa::avx512, pool2d_fns_avx512()},
      {"scalar", Isa::scalar, pool2d_fns_scalar()},
  };
  return select("pool2d", kList);
}

// Runs fn(n, oh) over all images and output rows in parallel.
template <typename F>
void for_rows(const Pool2dDesc& p, F&& fn) {
  const int64_t OH = p.OH();
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(p.OW() * p.C, 1));
  tbb::parallel_for(tbb::blocked_range<int64_t>(0, p.N * OH, grain), [&](const tbb::blocked_range<int64_t>& r) {
    for (int64_t i = r.begin(); i < r.end(); ++i) fn(i / OH, i % OH);
  });
}
}  // namespace

const Pool2dFns& pool2d_fns() { return *pick().fns; }
const char* pool2d_impl_name() { return pick().name; }

namespace {
// NaN-propagating max of per-piece amax values (each NaN if its piece held a NaN).
float combine_amax(const std::vector<float>& pieces) {
  float m = 0.f;
  for (float a : pieces) {
    if (std::isnan(a)) return a;
    m = std::max(m, a);
  }
  return m;
}
}  // namespace

void maxpool2d_forward(const Pool2dDesc& p, const float* x, float* y, int32_t* argmax, float* amax) {
  pool2d_validate(p);
  const auto f = pool2d_fns().maxpool_forward_row;
  if (!amax) {
    for_rows(p, [&](int64_t n, int64_t oh) { f(p, x, y, argmax, n, oh, nullptr); });
    return;
  }
  const int64_t OH = p.OH();
  std::vector<float> rows(static_cast<size_t>(p.N * OH), 0.f);
  for_rows(p, [&](int64_t n, int64_t oh) { f(p, x, y, argmax, n, oh, &rows[static_cast<size_t>(n * OH + oh)]); });
  *amax = combine_amax(rows);
}
void maxpool2d_backward(const Pool2dDesc& p, const float* dy, const int32_t* argmax, float* dx,
                        const float* relu_mask, float* amax) {
  pool2d_validate(p);
  const auto f = pool2d_fns().maxpool_backward_image;
  // By image: windows of one image overlap when stride < window, images never do.
  if (!amax) {
    tbb::parallel_for(int64_t{0}, p.N, [&](int64_t n) { f(p, dy, argmax, dx, relu_mask, n, nullptr); });
    return;
  }
  std::vector<float> images(static_cast<size_t>(p.N), 0.f);
  tbb::parallel_for(int64_t{0}, p.N, [&](int64_t n) { f(p, dy, argmax, dx, relu_mask, n, &images[static_cast<size_t>(n)]); });
  *amax = combine_amax(images);
}

void avgpool2d_forward(const Pool2dDesc& p, const float* x, float* y) {
  pool2d_validate(p);
  const auto f = pool2d_fns().avgpool_forward_row;
  for_rows(p, [&](int64_t n, int64_t oh) { f(p, x, y, n, oh); });
}

void avgpool2d_backward(const Pool2dDesc& p, const float* dy, float* dx) {
  pool2d_validate(p);
  const auto f = pool2d_fns().avgpool_backward_image;
  tbb::parallel_for(int64_t{0}, p.N, [&](int64_t n) { f(p, dy, dx, n); });
}

}  // namespace tessera::kernels
