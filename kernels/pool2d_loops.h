// The loops of pool2d.cc, compiled once per ISA rung (pool2d_scalar.cc, pool2d_avx512.cc): the
// same source, vectorized over contiguous channels by the compiler at each rung's width. Every
// function handles one output row (forward) or one image (backward); pool2d.cc validates,
// splits the work over oneTBB and dispatches. Include only from those two files.
#pragma once

#include <tessera/kernels/pool2d.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

namespace tessera::kernels {
namespace {

// Calls fn(ih, iw) for the input positions of window (oh, ow) that lie inside the image, in
// window order (r, then s).
template <typename F>
inline void for_window(const Pool2dDesc& p, int64_t oh, int64_t ow, F&& fn) {
  for (int64_t r = 0; r < p.R; ++r) {
    const int64_t ih = oh * p.stride_h - p.pad_h + r;
    if (ih < 0 || ih >= p.H) continue;
    for (int64_t s = 0; s < p.S; ++s) {
      const int64_t iw = ow * p.stride_w - p.pad_w + s;
      if (iw >= 0 && iw < p.W) fn(ih, iw);
    }
  }
}

// Running max of |v| as bits: for non-negative floats integer order is float order, and NaN
// bits (above 0x7f800000) beat every number, so the max is NaN exactly when a NaN was seen. An
// integer max reduction vectorizes where a NaN-propagating float max would not.
inline uint32_t abs_bits(float v) {
  uint32_t b;
  std::memcpy(&b, &v, sizeof b);
  return b & 0x7fffffffu;
}
inline float bits_to_float(uint32_t b) {
  float v;
  std::memcpy(&v, &b, sizeof v);
  return v;
}
// max(m, abs_bits(v[i])) over n floats just written (in L1 or L2): a loop of its own, which the
// compiler vectorizes; folded into the writing loops it was not.
inline uint32_t max_abs_bits(const float* v, int64_t n, uint32_t m) {
  for (int64_t i = 0; i < n; ++i) m = std::max(m, abs_bits(v[i]));
  return m;
}

template <bool kAmax>
void maxpool_forward_row_t(const Pool2dDesc& p, const float* x, float* y, int32_t* argmax, int64_t n, int64_t oh,
                           uint32_t& am) {
  const int64_t OW = p.OW(), C = p.C;
  for (int64_t ow = 0; ow < OW; ++ow) {
    float* yo = y + ((n * p.OH() + oh) * OW + ow) * C;
    int32_t* ao = argmax ? argmax + ((n * p.OH() + oh) * OW + ow) * C : nullptr;
    bool first = true;
    for_window(p, oh, ow, [&](int64_t ih, int64_t iw) {
      const float* xi = x + ((n * p.H + ih) * p.W + iw) * C;
      const int32_t idx = static_cast<int32_t>(ih * p.W + iw);
      if (first) {
        std::memcpy(yo, xi, C * sizeof(float));
        if (ao) for (int64_t c = 0; c < C; ++c) ao[c] = idx;
        first = false;
        return;
      }
      // x != x is NaN: a NaN is taken once and then kept (nothing compares greater).
      if (ao) {
        for (int64_t c = 0; c < C; ++c) {
          const bool take = xi[c] > yo[c] || xi[c] != xi[c];
          yo[c] = take ? xi[c] : yo[c];
          ao[c] = take ? idx : ao[c];
        }
      } else {
        for (int64_t c = 0; c < C; ++c) yo[c] = (xi[c] > yo[c] || xi[c] != xi[c]) ? xi[c] : yo[c];
      }
    });
    if constexpr (kAmax) am = max_abs_bits(yo, C, am);
  }
}

// With `amax`: *amax = max(*amax, max |y| of the row) (NaN if any is NaN).
void maxpool_forward_row(const Pool2dDesc& p, const float* x, float* y, int32_t* argmax, int64_t n, int64_t oh,
                         float* amax) {
  uint32_t am = 0;
  if (!amax) return maxpool_forward_row_t<false>(p, x, y, argmax, n, oh, am);
  am = abs_bits(*amax);
  maxpool_forward_row_t<true>(p, x, y, argmax, n, oh, am);
  *amax = bits_to_float(am);
}

// dx of image n: zero, then dy added at each argmax, then (with relu_mask) kept only where the
// mask is positive. When the windows tile the image (stride == window, no padding) every
// position receives at most one window's gradient, so it is written once, selected by its argmax
// (and the mask), with no zero pass or scatter; "+ 0.0f" turns a -0 gradient into +0 as 0 + dy
// does. Positions past the last window are zeroed.
template <bool kAmax>
void maxpool_backward_image_t(const Pool2dDesc& p, const float* dy, const int32_t* argmax, float* dx,
                              const float* relu_mask, int64_t n, uint32_t& am) {
  const int64_t OH = p.OH(), OW = p.OW(), C = p.C, HW = p.H * p.W;
  float* base = dx + n * HW * C;
  const float* mask = relu_mask ? relu_mask + n * HW * C : nullptr;
  const bool tiled = p.stride_h == p.R && p.stride_w == p.S && p.pad_h == 0 && p.pad_w == 0;
  if (!tiled) {
    std::memset(base, 0, static_cast<size_t>(HW * C) * sizeof(float));
    for (int64_t o = 0; o < OH * OW; ++o) {
      const float* g = dy + (n * OH * OW + o) * C;
      const int32_t* a = argmax + (n * OH * OW + o) * C;
      for (int64_t c = 0; c < C; ++c) base[static_cast<int64_t>(a[c]) * C + c] += g[c];
    }
    if (mask) {
      for (int64_t i = 0; i < HW * C; ++i) base[i] = mask[i] > 0.0f ? base[i] : 0.0f;
    }
    if constexpr (kAmax) am = max_abs_bits(base, HW * C, am);
    return;
  }
  for (int64_t oh = 0; oh < OH; ++oh) {
    for (int64_t ow = 0; ow < OW; ++ow) {
      const float* g = dy + ((n * OH + oh) * OW + ow) * C;
      const int32_t* a = argmax + ((n * OH + oh) * OW + ow) * C;
      for (int64_t r = 0; r < p.R; ++r) {
        for (int64_t s = 0; s < p.S; ++s) {
          const int64_t pos = (oh * p.R + r) * p.W + ow * p.S + s;
          const int32_t idx = static_cast<int32_t>(pos);
          float* d = base + pos * C;
          if (mask) {
            const float* m = mask + pos * C;
            for (int64_t c = 0; c < C; ++c) d[c] = (a[c] == idx && m[c] > 0.0f ? g[c] : 0.0f) + 0.0f;
          } else {
            for (int64_t c = 0; c < C; ++c) d[c] = (a[c] == idx ? g[c] : 0.0f) + 0.0f;
          }
          if constexpr (kAmax) am = max_abs_bits(d, C, am);
        }
      }
    }
    // Columns right of the last window, in this band of rows.
    for (int64_t r = 0; r < p.R; ++r) {
      const int64_t row = oh * p.R + r, first_col = OW * p.S;
      if (first_col < p.W) std::memset(base + (row * p.W + first_col) * C, 0, static_cast<size_t>((p.W - first_col) * C) * sizeof(float));
    }
  }
  // Rows below the last window.
  const int64_t first_row = OH * p.R;
  if (first_row < p.H) std::memset(base + first_row * p.W * C, 0, static_cast<size_t>((p.H - first_row) * p.W * C) * sizeof(float));
}

// With `amax`: *amax = max(*amax, max |dx| of the image) (NaN if any is NaN); the zeroed
// positions change nothing.
void maxpool_backward_image(const Pool2dDesc& p, const float* dy, const int32_t* argmax, float* dx,
                            const float* relu_mask, int64_t n, float* amax) {
  uint32_t am = 0;
  if (!amax) return maxpool_backward_image_t<false>(p, dy, argmax, dx, relu_mask, n, am);
  am = abs_bits(*amax);
  maxpool_backward_image_t<true>(p, dy, argmax, dx, relu_mask, n, am);
  *amax = bits_to_float(am);
}

void avgpool_forward_row(const Pool2dDesc& p, const float* x, float* y, int64_t n, int64_t oh) {
  const int64_t OW = p.OW(), C = p.C;
  const float inv = 1.0f / static_cast<float>(p.R * p.S);
  for (int64_t ow = 0; ow < OW; ++ow) {
    float* yo = y + ((n * p.OH() + oh) * OW + ow) * C;
    std::memset(yo, 0, C * sizeof(float));
    for_window(p, oh, ow, [&](int64_t ih, int64_t iw) {
      const float* xi = x + ((n * p.H + ih) * p.W + iw) * C;
      for (int64_t c = 0; c < C; ++c) yo[c] += xi[c];
    });
    for (int64_t c = 0; c < C; ++c) yo[c] *= inv;
  }
}

void avgpool_backward_image(const Pool2dDesc& p, const float* dy, float* dx, int64_t n) {
  const int64_t OH = p.OH(), OW = p.OW(), C = p.C;
  const float inv = 1.0f / static_cast<float>(p.R * p.S);
  std::memset(dx + n * p.H * p.W * C, 0, static_cast<size_t>(p.H * p.W * C) * sizeof(float));
  for (int64_t oh = 0; oh < OH; ++oh)
    for (int64_t ow = 0; ow < OW; ++ow) {
      const float* g = dy + ((n * OH + oh) * OW + ow) * C;
      for_window(p, oh, ow, [&](int64_t ih, int64_t iw) {
        float* d = dx + ((n * p.H + ih) * p.W + iw) * C;
        for (int64_t c = 0; c < C; ++c) d[c] += g[c] * inv;
      });
    }
}

const Pool2dFns kPoolFns = {maxpool_forward_row, maxpool_backward_image, avgpool_forward_row, avgpool_backward_image};

}  // namespace
}  // namespace tessera::kernels
