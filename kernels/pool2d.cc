#include <tessera/kernels/pool2d.h>

#include <tessera/core/error.h>

#include <oneapi/tbb/parallel_for.h>

#include <cmath>
#include <cstring>
#include <limits>

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

namespace {
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

void maxpool2d_forward(const Pool2dDesc& p, const float* x, float* y, int32_t* argmax) {
  pool2d_validate(p);
  const int64_t OW = p.OW(), C = p.C;
  for_rows(p, [&](int64_t n, int64_t oh) {
    for (int64_t ow = 0; ow < OW; ++ow) {
      float* yo = y + ((n * p.OH() + oh) * OW + ow) * C;
      int32_t* ao = argmax ? argmax + ((n * p.OH() + oh) * OW + ow) * C : nullptr;
      bool first = true;
      for (int64_t r = 0; r < p.R; ++r) {
        int64_t ih = oh * p.stride_h - p.pad_h + r;
        if (ih < 0 || ih >= p.H) continue;
        for (int64_t s = 0; s < p.S; ++s) {
          int64_t iw = ow * p.stride_w - p.pad_w + s;
          if (iw < 0 || iw >= p.W) continue;
          const float* xi = x + ((n * p.H + ih) * p.W + iw) * C;
          int32_t idx = static_cast<int32_t>(ih * p.W + iw);
          if (first) {
            std::memcpy(yo, xi, C * sizeof(float));
            if (ao) for (int64_t c = 0; c < C; ++c) ao[c] = idx;
            first = false;
            continue;
          }
          // x != x is NaN: a NaN is taken once and then kept (nothing compares greater).
          if (ao) {
            for (int64_t c = 0; c < C; ++c) {
              bool take = xi[c] > yo[c] || xi[c] != xi[c];
              yo[c] = take ? xi[c] : yo[c];
              ao[c] = take ? idx : ao[c];
            }
          } else {
            for (int64_t c = 0; c < C; ++c) yo[c] = (xi[c] > yo[c] || xi[c] != xi[c]) ? xi[c] : yo[c];
          }
        }
      }
    }
  });
}

void maxpool2d_backward(const Pool2dDesc& p, const float* dy, const int32_t* argmax, float* dx) {
  pool2d_validate(p);
  const int64_t OH = p.OH(), OW = p.OW(), C = p.C, HW = p.H * p.W;
  std::memset(dx, 0, static_cast<size_t>(p.N * HW * C) * sizeof(float));
  // By image: windows of one image overlap when stride < window, images never do.
  tbb::parallel_for(int64_t{0}, p.N, [&](int64_t n) {
    for (int64_t o = 0; o < OH * OW; ++o) {
      const float* g = dy + (n * OH * OW + o) * C;
      const int32_t* a = argmax + (n * OH * OW + o) * C;
      float* base = dx + n * HW * C;
      for (int64_t c = 0; c < C; ++c) base[static_cast<int64_t>(a[c]) * C + c] += g[c];
    }
  });
}

void avgpool2d_forward(const Pool2dDesc& p, const float* x, float* y) {
  pool2d_validate(p);
  const int64_t OW = p.OW(), C = p.C;
  const float inv = 1.0f / static_cast<float>(p.R * p.S);
  for_rows(p, [&](int64_t n, int64_t oh) {
    for (int64_t ow = 0; ow < OW; ++ow) {
      float* yo = y + ((n * p.OH() + oh) * OW + ow) * C;
      std::memset(yo, 0, C * sizeof(float));
      for (int64_t r = 0; r < p.R; ++r) {
        int64_t ih = oh * p.stride_h - p.pad_h + r;
        if (ih < 0 || ih >= p.H) continue;
        for (int64_t s = 0; s < p.S; ++s) {
          int64_t iw = ow * p.stride_w - p.pad_w + s;
          if (iw < 0 || iw >= p.W) continue;
          const float* xi = x + ((n * p.H + ih) * p.W + iw) * C;
          for (int64_t c = 0; c < C; ++c) yo[c] += xi[c];
        }
      }
      for (int64_t c = 0; c < C; ++c) yo[c] *= inv;
    }
  });
}

void avgpool2d_backward(const Pool2dDesc& p, const float* dy, float* dx) {
  pool2d_validate(p);
  const int64_t OH = p.OH(), OW = p.OW(), C = p.C;
  const float inv = 1.0f / static_cast<float>(p.R * p.S);
  std::memset(dx, 0, static_cast<size_t>(p.N * p.H * p.W * C) * sizeof(float));
  tbb::parallel_for(int64_t{0}, p.N, [&](int64_t n) {
    for (int64_t oh = 0; oh < OH; ++oh)
      for (int64_t ow = 0; ow < OW; ++ow) {
        const float* g = dy + ((n * OH + oh) * OW + ow) * C;
        for (int64_t r = 0; r < p.R; ++r) {
          int64_t ih = oh * p.stride_h - p.pad_h + r;
          if (ih < 0 || ih >= p.H) continue;
          for (int64_t s = 0; s < p.S; ++s) {
            int64_t iw = ow * p.stride_w - p.pad_w + s;
            if (iw < 0 || iw >= p.W) continue;
            float* d = dx + ((n * p.H + ih) * p.W + iw) * C;
            for (int64_t c = 0; c < C; ++c) d[c] += g[c] * inv;
          }
        }
      }
  });
}

}  // namespace tessera::kernels
