// Convolution as implicit GEMM over bounded row chunks (see conv2d.h for the mapping).
#include <tessera/kernels/conv2d.h>

#include <tessera/core/error.h>
#include <tessera/core/log.h>
#include <tessera/kernels/conv2d_direct.h>
#include <tessera/kernels/convert.h>
#include <tessera/kernels/cpu.h>
#include <tessera/kernels/elementwise.h>

#include <oneapi/tbb/parallel_for.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace tessera::kernels {

#if !defined(TESSERA_HAVE_AVX512)
const Conv2dDirectFns* conv2d_direct_avx512() { return nullptr; }
#endif

namespace {

std::atomic<size_t> g_workspace{size_t{8} << 20};
std::atomic<int> g_algo{-1};  // -1: not set, TESSERA_CONV decides

// The GEMM operand type of one conv operand.
struct OperandType {
  DType type = DType::f32;
  Cfp8Format fmt;
  size_t size() const { return dtype_size(type); }
  int bias() const { return is_cfp8(type) ? fmt.bias : -1; }
};

OperandType operand_type(const Conv2dDesc& d, const Cfp8Format& fmt) {
  if (d.compute == DType::f32 || d.compute == DType::bf16) return {d.compute, fmt};
  return {fmt.layout == Cfp8Layout::e4m3 ? DType::cfp8_e4m3 : DType::cfp8_e5m2, fmt};
}

// n f32 -> n elements of t at dst (round to nearest even).
inline void convert_run(const float* src, char* dst, size_t n, const OperandType& t) {
  switch (t.type) {
    case DType::f32: std::memcpy(dst, src, n * 4); return;
    case DType::bf16:
      if (n < 16) {
        auto* o = reinterpret_cast<uint16_t*>(dst);
        for (size_t i = 0; i < n; ++i) o[i] = ::tessera::f32_to_bf16(src[i]);
      } else {
        f32_to_bf16(src, reinterpret_cast<uint16_t*>(dst), n);
      }
      return;
    default:
      if (n < 16) {
        auto* o = reinterpret_cast<uint8_t*>(dst);
        for (size_t i = 0; i < n; ++i) o[i] = cfp8_encode(src[i], t.fmt);
      } else {
        f32_to_cfp8(src, reinterpret_cast<uint8_t*>(dst), n, t.fmt);
      }
  }
}

// A whole f32 buffer converted (or aliased when f32).
struct Converted {
  std::vector<char> storage;
  const void* data = nullptr;
};
Converted convert_all(const float* src, size_t n, const OperandType& t) {
  Converted c;
  if (t.type == DType::f32) {
    c.data = src;
    return c;
  }
  c.storage.resize(n * t.size() + 64);
  tbb::parallel_for(tbb::blocked_range<size_t>(0, n, 1 << 16), [&](const tbb::blocked_range<size_t>& r) {
    convert_run(src + r.begin(), c.storage.data() + r.begin() * t.size(), r.size(), t);
  });
  c.data = c.storage.data();
  return c;
}

// Unfolds output rows [m0, m1) into col ([m1 - m0, R*S*C] of type t).
void unfold(const Conv2dDesc& d, const float* x, int64_t m0, int64_t m1, char* col, const OperandType& t) {
  const int64_t OH = d.OH(), OW = d.OW(), P = OH * OW, RSC = d.R * d.S * d.C;
  const size_t es = t.size(), run = static_cast<size_t>(d.C) * es;
  tbb::parallel_for(tbb::blocked_range<int64_t>(m0, m1, 32), [&](const tbb::blocked_range<int64_t>& rg) {
    for (int64_t m = rg.begin(); m < rg.end(); ++m) {
      int64_t n = m / P, p = m % P, oh = p / OW, ow = p % OW;
      char* row = col + static_cast<size_t>((m - m0) * RSC) * es;
      const int64_t iw0 = ow * d.stride_w - d.pad_w;
      // With dilation 1 and the window inside the row, the S*C elements are contiguous.
      const bool whole = d.dil_w == 1 && iw0 >= 0 && iw0 + d.S <= d.W;
      for (int64_t r = 0; r < d.R; ++r) {
        int64_t ih = oh * d.stride_h - d.pad_h + r * d.dil_h;
        char* dst = row + static_cast<size_t>(r * d.S * d.C) * es;
        if (ih < 0 || ih >= d.H) {
          std::memset(dst, 0, run * static_cast<size_t>(d.S));  // code 0 is +0 in f32, bf16 and cfp8
          continue;
        }
        const float* src = x + ((n * d.H + ih) * d.W) * d.C;
        if (whole) {
          convert_run(src + iw0 * d.C, dst, static_cast<size_t>(d.S * d.C), t);
          continue;
        }
        for (int64_t s = 0; s < d.S; ++s) {
          int64_t iw = iw0 + s * d.dil_w;
          if (iw < 0 || iw >= d.W) {
            std::memset(dst + static_cast<size_t>(s) * run, 0, run);
          } else {
            convert_run(src + iw * d.C, dst + static_cast<size_t>(s) * run, static_cast<size_t>(d.C), t);
          }
        }
      }
    }
  });
}

// dx += fold(dcol) for output rows [m0, m1); one task per image, so writes never collide.
void fold_add(const Conv2dDesc& d, const float* dcol, int64_t m0, int64_t m1, float* dx) {
  const int64_t OH = d.OH(), OW = d.OW(), P = OH * OW, RSC = d.R * d.S * d.C;
  int64_t n0 = m0 / P, n1 = (m1 - 1) / P + 1;
  tbb::parallel_for(n0, n1, [&](int64_t n) {
    int64_t a = std::max(m0, n * P), b = std::min(m1, (n + 1) * P);
    for (int64_t m = a; m < b; ++m) {
      int64_t p = m % P, oh = p / OW, ow = p % OW;
      const float* row = dcol + (m - m0) * RSC;
      for (int64_t r = 0; r < d.R; ++r) {
        int64_t ih = oh * d.stride_h - d.pad_h + r * d.dil_h;
        if (ih < 0 || ih >= d.H) continue;
        for (int64_t s = 0; s < d.S; ++s) {
          int64_t iw = ow * d.stride_w - d.pad_w + s * d.dil_w;
          if (iw < 0 || iw >= d.W) continue;
          float* dst = dx + ((n * d.H + ih) * d.W + iw) * d.C;
          const float* src = row + (r * d.S + s) * d.C;
          for (int64_t c = 0; c < d.C; ++c) dst[c] += src[c];
        }
      }
    }
  });
}

bool is_pointwise(const Conv2dDesc& d) {
  return d.R == 1 && d.S == 1 && d.stride_h == 1 && d.stride_w == 1 && d.pad_h == 0 && d.pad_w == 0;
}

int64_t rows_per_chunk(const Conv2dDesc& d, size_t bytes_per_row) {
  int64_t M = d.N * d.OH() * d.OW();
  int64_t rows = static_cast<int64_t>(conv2d_workspace_bytes() / std::max<size_t>(bytes_per_row, 1));
  return std::max<int64_t>(1, std::min(rows, M));
}


// ---- the direct path (conv2d_direct.h) ----------------------------------------------------------

Conv2dAlgo algo_setting() {
  const int set = g_algo.load();
  if (set >= 0) return static_cast<Conv2dAlgo>(set);
  static const Conv2dAlgo from_env = [] {
    const char* v = std::getenv("TESSERA_CONV");
    if (!v || !*v || std::string(v) == "auto") return Conv2dAlgo::automatic;
    if (std::string(v) == "direct") return Conv2dAlgo::direct;
    if (std::string(v) == "gemm") return Conv2dAlgo::gemm;
    TESSERA_THROW(ValueError, "TESSERA_CONV='", v, "' is not one of: auto, direct, gemm");
  }();
  return from_env;
}

// The direct kernels when they apply to this pass, else nullptr and `why`.
const Conv2dDirectFns* direct_fns(const Conv2dDesc& d, Conv2dPass pass, std::string& why) {
  const Conv2dAlgo algo = algo_setting();
  if (algo == Conv2dAlgo::gemm) {
    why = "the gemm algorithm was requested";
    return nullptr;
  }
  const Conv2dDirectFns* fns = conv2d_direct_avx512();
  if (!fns) {
    why = "the avx512 rung was not compiled in";
    return nullptr;
  }
  why = isa_unavailable_reason(Isa::avx512);
  if (!why.empty()) return nullptr;
  if (pass == Conv2dPass::backward_data &&
      (d.stride_h != 1 || d.stride_w != 1 || d.pad_h > d.dil_h * (d.R - 1) || d.pad_w > d.dil_w * (d.S - 1))) {
    why = "backward data with stride > 1 or padding wider than the dilated filter";
    return nullptr;
  }
  if (pass == Conv2dPass::backward_data && d.C < 16 && algo != Conv2dAlgo::direct) {
    why = "backward data into fewer than 16 channels (a 16-lane tile would be mostly masked)";
    return nullptr;
  }
  // Where vdpbf16ps is at least as fast as FMA, bf16 / cfp8 belong on the GEMM's dot kernel
  // (unless the direct path is forced).
  if (d.compute != DType::f32 && algo != Conv2dAlgo::direct) {
    GemmDesc g;
    g.M = g.N = g.K = 1;
    g.a_type = g.b_type = DType::bf16;
    if (std::string(gemm_impl_name(g)) == "avx512_bf16") {
      why = "bf16/cfp8 GEMM runs on vdpbf16ps on this CPU";
      return nullptr;
    }
  }
  return fns;
}

void log_choice(Conv2dPass pass, bool direct, const std::string& why) {
  static std::atomic<int> last[3] = {-1, -1, -1};
  const int code = direct ? 1 : 0;
  const char* name = direct ? "direct_avx512" : "gemm";
  if (last[static_cast<int>(pass)].exchange(code) == code) return;
  auto logger = log::get("kernels");
  if (logger->should_log(spdlog::level::debug)) {
    logger->debug("conv2d {}: using {}{}", conv2d_pass_name(pass), name, why.empty() ? "" : " (direct skipped: " + why + ")");
  }
}

// n f32 -> n f32 holding values of type t (rounded to nearest even; f32 copies).
void round_into(const float* src, float* dst, size_t n, const OperandType& t) {
  f32_round_to(src, dst, n, t.type, t.fmt);
}

// Images [images, H, W, C] -> zero-padded [images, Hp, Wp, C] rounded to t: padded (i, j) is
// source (i - pad_h, j - pad_w).
void pad_round(const float* src, int64_t images, int64_t H, int64_t W, int64_t C, int64_t pad_h, int64_t pad_w,
               int64_t Hp, int64_t Wp, float* dst, const OperandType& t) {
  const int64_t left = std::min(pad_w, Wp), copy = std::clamp<int64_t>(Wp - pad_w, 0, W);
  tbb::parallel_for(tbb::blocked_range<int64_t>(0, images * Hp, 8), [&](const tbb::blocked_range<int64_t>& rg) {
    for (int64_t row = rg.begin(); row < rg.end(); ++row) {
      const int64_t n = row / Hp, ih = row % Hp - pad_h;
      float* out = dst + row * Wp * C;
      if (ih < 0 || ih >= H) {
        std::memset(out, 0, static_cast<size_t>(Wp * C) * sizeof(float));
        continue;
      }
      std::memset(out, 0, static_cast<size_t>(left * C) * sizeof(float));
      round_into(src + ((n * H + ih) * W) * C, out + left * C, static_cast<size_t>(copy * C), t);
      std::memset(out + (left + copy) * C, 0, static_cast<size_t>((Wp - left - copy) * C) * sizeof(float));
    }
  });
}

// A grow-only f32 buffer per calling thread (a conv call is reused every training step).
float* direct_workspace(size_t floats) {
  thread_local std::vector<float> buf;
  if (buf.size() < floats) {
    buf.clear();
    buf.shrink_to_fit();
    buf.resize(floats);
  }
  return buf.data();
}

// Images per chunk: the padded (and rounded) per-image buffers within the workspace bound.
int64_t images_per_chunk(int64_t N, size_t bytes_per_image) {
  return std::clamp<int64_t>(static_cast<int64_t>(conv2d_workspace_bytes() / std::max<size_t>(bytes_per_image, 1)), 1,
                             std::max<int64_t>(N, 1));
}

GemmAct act_of(Epilogue e) {
  return e == Epilogue::relu ? GemmAct::relu : e == Epilogue::gelu ? GemmAct::gelu : GemmAct::none;
}

DirectInput direct_input(const Conv2dDesc& d) {
  DirectInput in;
  in.C = d.C;
  in.OH = d.OH();
  in.OW = d.OW();
  in.R = d.R;
  in.S = d.S;
  in.stride_h = d.stride_h;
  in.stride_w = d.stride_w;
  in.dil_h = d.dil_h;
  in.dil_w = d.dil_w;
  in.Hp = (in.OH - 1) * d.stride_h + (d.R - 1) * d.dil_h + 1;
  in.Wp = (in.OW - 1) * d.stride_w + (d.S - 1) * d.dil_w + 1;
  in.flush_denormals = d.compute != DType::f32;
  return in;
}

void forward_direct(const Conv2dDirectFns& fns, const Conv2dDesc& d, const float* x, const float* w, const float* bias,
                    float* y, Epilogue epilogue) {
  const int64_t RSC = d.R * d.S * d.C;
  const OperandType xt = operand_type(d, d.x_fmt), wt = operand_type(d, d.w_fmt);
  std::vector<float> wr;
  if (wt.type != DType::f32) {
    wr.resize(static_cast<size_t>(RSC * d.K));
    round_into(w, wr.data(), wr.size(), wt);
  }
  DirectForward f;
  f.in = direct_input(d);
  f.w = wr.empty() ? w : wr.data();
  f.K = d.K;
  f.bias = bias;
  f.act = act_of(epilogue);
  const int64_t image_floats = f.in.Hp * f.in.Wp * d.C;
  const int64_t nb = images_per_chunk(d.N, static_cast<size_t>(image_floats) * sizeof(float));
  float* xp = direct_workspace(static_cast<size_t>(nb * image_floats));
  for (int64_t n0 = 0; n0 < d.N; n0 += nb) {
    const int64_t images = std::min(nb, d.N - n0);
    pad_round(x + n0 * d.H * d.W * d.C, images, d.H, d.W, d.C, d.pad_h, d.pad_w, f.in.Hp, f.in.Wp, xp, xt);
    f.in.xp = xp;
    f.in.images = images;
    f.y = y + n0 * f.in.OH * f.in.OW * d.K;
    fns.forward(f);
  }
}

// Stride 1: dx is the forward convolution of dy, padded by dil * (R - 1) - pad, with the filter
// flipped in (r, s) and transposed in (c, k).
void backward_data_direct(const Conv2dDirectFns& fns, const Conv2dDesc& d, const float* dy, const float* w, float* dx) {
  const OperandType dyt = operand_type(d, d.dy_fmt), wt = operand_type(d, d.w_fmt);
  const int64_t RSC = d.R * d.S * d.C, OH = d.OH(), OW = d.OW();
  std::vector<float> wr(static_cast<size_t>(RSC * d.K)), wf(wr.size());
  round_into(w, wr.data(), wr.size(), wt);
  for (int64_t r = 0; r < d.R; ++r)
    for (int64_t s = 0; s < d.S; ++s)
      for (int64_t c = 0; c < d.C; ++c)
        for (int64_t k = 0; k < d.K; ++k)
          wf[static_cast<size_t>((((d.R - 1 - r) * d.S + (d.S - 1 - s)) * d.K + k) * d.C + c)] =
              wr[static_cast<size_t>(((r * d.S + s) * d.C + c) * d.K + k)];
  DirectForward f;
  f.in.C = d.K;
  f.in.OH = d.H;
  f.in.OW = d.W;
  f.in.R = d.R;
  f.in.S = d.S;
  f.in.dil_h = d.dil_h;
  f.in.dil_w = d.dil_w;
  f.in.Hp = d.H + (d.R - 1) * d.dil_h;
  f.in.Wp = d.W + (d.S - 1) * d.dil_w;
  f.in.flush_denormals = d.compute != DType::f32;
  f.w = wf.data();
  f.K = d.C;
  const int64_t ph = d.dil_h * (d.R - 1) - d.pad_h, pw = d.dil_w * (d.S - 1) - d.pad_w;
  const int64_t image_floats = f.in.Hp * f.in.Wp * d.K;
  const int64_t nb = images_per_chunk(d.N, static_cast<size_t>(image_floats) * sizeof(float));
  float* dyp = direct_workspace(static_cast<size_t>(nb * image_floats));
  for (int64_t n0 = 0; n0 < d.N; n0 += nb) {
    const int64_t images = std::min(nb, d.N - n0);
    pad_round(dy + n0 * OH * OW * d.K, images, OH, OW, d.K, ph, pw, f.in.Hp, f.in.Wp, dyp, dyt);
    f.in.xp = dyp;
    f.in.images = images;
    f.y = dx + n0 * d.H * d.W * d.C;
    fns.forward(f);
  }
}

// dbias (may be null) is fused into the kernel when it reads unrounded dy, else summed here.
void backward_weights_direct(const Conv2dDirectFns& fns, const Conv2dDesc& d, const float* x, const float* dy,
                             float* dw, float* dbias) {
  const OperandType xt = operand_type(d, d.x_fmt), dyt = operand_type(d, d.dy_fmt);
  const int64_t RSC = d.R * d.S * d.C, OH = d.OH(), OW = d.OW();
  DirectWeightGrad g;
  g.in = direct_input(d);
  g.K = d.K;
  const int64_t image_floats = g.in.Hp * g.in.Wp * d.C;
  // A filter of few taps (the first layer: 3x3x1) loads each dy element once or twice: round
  // it as it is loaded instead of in a pass of its own over the whole dy.
  const bool round_on_load = dyt.type != DType::f32 && RSC <= 24;
  if (round_on_load) {
    g.round_dy = dyt.type;
    g.dy_fmt = dyt.fmt;
  }
  const int64_t dy_floats = dyt.type == DType::f32 || round_on_load ? 0 : OH * OW * d.K;
  const int64_t nb = images_per_chunk(d.N, static_cast<size_t>(image_floats + dy_floats) * sizeof(float));
  // Pixel ranges reduced concurrently into their own accumulators, summed in order at the end:
  // the count depends on the problem only, so the result does not depend on the thread count.
  g.parts = static_cast<int>(std::clamp<int64_t>(nb * OH * OW / 1024, 1, 16));
  std::vector<std::vector<float>> partial(static_cast<size_t>(g.parts - 1), std::vector<float>(static_cast<size_t>(RSC * d.K)));
  std::vector<float*> acc{dw};
  for (auto& p : partial) acc.push_back(p.data());
  g.acc = acc.data();
  std::memset(dw, 0, static_cast<size_t>(RSC * d.K) * sizeof(float));
  // The bias gradient rides along with the kernel's blocks of dy when those are unrounded (no
  // second pass over dy from memory); per part, like dw, then summed in order.
  std::vector<float> bias_parts;
  std::vector<float*> bias_acc;
  if (dbias && dy_floats == 0) {
    bias_parts.assign(static_cast<size_t>(g.parts * d.K), 0.f);
    for (int part = 0; part < g.parts; ++part) bias_acc.push_back(bias_parts.data() + part * d.K);
    g.dbias = bias_acc.data();
  } else if (dbias) {
    bias_grad(dy, dbias, static_cast<size_t>(d.N * OH * OW), static_cast<size_t>(d.K));
  }
  float* ws = direct_workspace(static_cast<size_t>(nb * (image_floats + dy_floats)));
  for (int64_t n0 = 0; n0 < d.N; n0 += nb) {
    const int64_t images = std::min(nb, d.N - n0);
    pad_round(x + n0 * d.H * d.W * d.C, images, d.H, d.W, d.C, d.pad_h, d.pad_w, g.in.Hp, g.in.Wp, ws, xt);
    g.dy = dy + n0 * OH * OW * d.K;
    if (dy_floats) {
      float* dyr = ws + nb * image_floats;
      const int64_t n = images * dy_floats;
      tbb::parallel_for(tbb::blocked_range<int64_t>(0, n, 1 << 15), [&](const tbb::blocked_range<int64_t>& rg) {
        round_into(g.dy + rg.begin(), dyr + rg.begin(), static_cast<size_t>(rg.size()), dyt);
      });
      g.dy = dyr;
    }
    g.in.xp = ws;
    g.in.images = images;
    fns.weight_grad(g);
  }
  for (const auto& p : partial) add(dw, p.data(), dw, static_cast<size_t>(RSC * d.K));
  if (g.dbias) {
    std::memcpy(dbias, bias_acc[0], static_cast<size_t>(d.K) * sizeof(float));
    for (int part = 1; part < g.parts; ++part) add(dbias, bias_acc[static_cast<size_t>(part)], dbias, static_cast<size_t>(d.K));
  }
}

}  // namespace

const char* conv2d_pass_name(Conv2dPass pass) {
  switch (pass) {
    case Conv2dPass::forward: return "forward";
    case Conv2dPass::backward_data: return "backward_data";
    case Conv2dPass::backward_weights: return "backward_weights";
  }
  return "?";
}

void set_conv2d_algorithm(Conv2dAlgo algo) { g_algo = static_cast<int>(algo); }

const char* conv2d_impl_name(const Conv2dDesc& d, Conv2dPass pass) {
  std::string why;
  return direct_fns(d, pass, why) ? "direct_avx512" : "gemm";
}

void set_conv2d_workspace_bytes(size_t bytes) { g_workspace = std::max<size_t>(bytes, 1); }
size_t conv2d_workspace_bytes() { return g_workspace; }

void conv2d_validate(const Conv2dDesc& d) {
  TESSERA_CHECK(d.N >= 0 && d.H > 0 && d.W > 0 && d.C > 0 && d.K > 0 && d.R > 0 && d.S > 0,
                "conv2d: bad sizes N=", d.N, " H=", d.H, " W=", d.W, " C=", d.C, " K=", d.K, " R=", d.R, " S=", d.S);
  TESSERA_CHECK(d.stride_h > 0 && d.stride_w > 0 && d.dil_h > 0 && d.dil_w > 0 && d.pad_h >= 0 && d.pad_w >= 0,
                "conv2d: bad stride (", d.stride_h, ", ", d.stride_w, "), dilation (", d.dil_h, ", ", d.dil_w,
                ") or padding (", d.pad_h, ", ", d.pad_w, ")");
  TESSERA_CHECK(d.OH() > 0 && d.OW() > 0, "conv2d: a ", d.R, "x", d.S, " filter with dilation (", d.dil_h, ", ",
                d.dil_w, ") does not fit a padded ", d.H, "x", d.W, " input (padding ", d.pad_h, ", ", d.pad_w, ")");
  TESSERA_CHECK_TYPE(d.compute == DType::f32 || d.compute == DType::bf16 || is_cfp8(d.compute),
                     "conv2d: compute type ", dtype_name(d.compute), " is not f32, bf16 or cfp8");
  if (is_cfp8(d.compute)) {
    check_cfp8_bias(d.x_fmt.bias);
    check_cfp8_bias(d.w_fmt.bias);
    check_cfp8_bias(d.dy_fmt.bias);
  }
}

void conv2d_forward(const Conv2dDesc& d, const float* x, const float* w, const float* bias, float* y,
                    Epilogue epilogue) {
  conv2d_validate(d);
  const int64_t M = d.N * d.OH() * d.OW(), RSC = d.R * d.S * d.C;
  if (M == 0) return;
  std::string why;
  if (const Conv2dDirectFns* fns = direct_fns(d, Conv2dPass::forward, why);
      fns && (epilogue == Epilogue::none || epilogue == Epilogue::relu || epilogue == Epilogue::gelu)) {
    log_choice(Conv2dPass::forward, true, "");
    forward_direct(*fns, d, x, w, bias, y, epilogue);
    return;
  }
  log_choice(Conv2dPass::forward, false, why);
  OperandType xt = operand_type(d, d.x_fmt), wt = operand_type(d, d.w_fmt);
  Converted wc = convert_all(w, static_cast<size_t>(RSC * d.K), wt);
  GemmDesc g;
  g.N = d.K;
  g.K = RSC;
  g.a_type = xt.type;
  g.a_bias = xt.bias();
  g.b_type = wt.type;
  g.b_bias = wt.bias();
  g.epilogue = epilogue;
  g.bias = bias;
  if (bias) {  // a bias given is always added: fold it into the epilogue
    TESSERA_CHECK(epilogue == Epilogue::none || epilogue == Epilogue::relu || epilogue == Epilogue::gelu,
                  "conv2d_forward: pass the bias pointer with epilogue none, relu or gelu, not ", epilogue_name(epilogue));
    g.epilogue = epilogue == Epilogue::relu ? Epilogue::bias_relu
                 : epilogue == Epilogue::gelu ? Epilogue::bias_gelu
                                              : Epilogue::bias;
  }
  if (is_pointwise(d) && xt.type == DType::f32) {  // the input already is the GEMM's A
    g.M = M;
    gemm(g, x, wc.data, y);
    return;
  }
  const int64_t chunk = rows_per_chunk(d, static_cast<size_t>(RSC) * xt.size());
  std::vector<char> col(static_cast<size_t>(chunk * RSC) * xt.size() + 64);
  for (int64_t m0 = 0; m0 < M; m0 += chunk) {
    int64_t m1 = std::min(M, m0 + chunk);
    unfold(d, x, m0, m1, col.data(), xt);
    g.M = m1 - m0;
    gemm(g, col.data(), wc.data, y + m0 * d.K);
  }
}

void conv2d_backward_data(const Conv2dDesc& d, const float* dy, const float* w, float* dx) {
  conv2d_validate(d);
  const int64_t M = d.N * d.OH() * d.OW(), RSC = d.R * d.S * d.C;
  if (M == 0) {
    std::memset(dx, 0, static_cast<size_t>(d.N * d.H * d.W * d.C) * sizeof(float));
    return;
  }
  std::string why;
  if (const Conv2dDirectFns* fns = direct_fns(d, Conv2dPass::backward_data, why)) {
    log_choice(Conv2dPass::backward_data, true, "");
    backward_data_direct(*fns, d, dy, w, dx);
    return;
  }
  log_choice(Conv2dPass::backward_data, false, why);
  std::memset(dx, 0, static_cast<size_t>(d.N * d.H * d.W * d.C) * sizeof(float));
  OperandType dyt = operand_type(d, d.dy_fmt), wt = operand_type(d, d.w_fmt);
  Converted wc = convert_all(w, static_cast<size_t>(RSC * d.K), wt);
  GemmDesc g;
  g.N = RSC;
  g.K = d.K;
  g.trans_b = true;  // w is [RSC, K]: op(B) = w^T
  g.a_type = dyt.type;
  g.a_bias = dyt.bias();
  g.b_type = wt.type;
  g.b_bias = wt.bias();
  if (is_pointwise(d)) {  // dx = dy w^T directly, no folding
    Converted dyc = convert_all(dy, static_cast<size_t>(M * d.K), dyt);
    g.M = M;
    gemm(g, dyc.data, wc.data, dx);
    return;
  }
  const int64_t chunk = rows_per_chunk(d, static_cast<size_t>(RSC) * 4 + static_cast<size_t>(d.K) * dyt.size());
  std::vector<float> dcol(static_cast<size_t>(chunk * RSC));
  std::vector<char> dyn(dyt.type == DType::f32 ? 0 : static_cast<size_t>(chunk * d.K) * dyt.size() + 64);
  for (int64_t m0 = 0; m0 < M; m0 += chunk) {
    int64_t m1 = std::min(M, m0 + chunk);
    const void* a = dy + m0 * d.K;
    if (dyt.type != DType::f32) {
      convert_run(dy + m0 * d.K, dyn.data(), static_cast<size_t>((m1 - m0) * d.K), dyt);
      a = dyn.data();
    }
    g.M = m1 - m0;
    gemm(g, a, wc.data, dcol.data());
    fold_add(d, dcol.data(), m0, m1, dx);
  }
}

void conv2d_backward_weights(const Conv2dDesc& d, const float* x, const float* dy, float* dw, float* dbias) {
  conv2d_validate(d);
  const int64_t M = d.N * d.OH() * d.OW(), RSC = d.R * d.S * d.C;
  if (M == 0) {
    std::memset(dw, 0, static_cast<size_t>(RSC * d.K) * sizeof(float));
    if (dbias) std::memset(dbias, 0, static_cast<size_t>(d.K) * sizeof(float));
    return;
  }
  std::string why;
  if (const Conv2dDirectFns* fns = direct_fns(d, Conv2dPass::backward_weights, why)) {
    log_choice(Conv2dPass::backward_weights, true, "");
    backward_weights_direct(*fns, d, x, dy, dw, dbias);
    return;
  }
  if (dbias) bias_grad(dy, dbias, static_cast<size_t>(M), static_cast<size_t>(d.K));
  log_choice(Conv2dPass::backward_weights, false, why);
  OperandType xt = operand_type(d, d.x_fmt), dyt = operand_type(d, d.dy_fmt);
  GemmDesc g;
  g.M = RSC;
  g.N = d.K;
  g.trans_a = true;  // col is [rows, RSC]: op(A) = col^T
  g.a_type = xt.type;
  g.a_bias = xt.bias();
  g.b_type = dyt.type;
  g.b_bias = dyt.bias();
  if (is_pointwise(d) && xt.type == DType::f32) {
    g.K = M;
    gemm(g, x, dy, dw);
    return;
  }
  // dW is small (RSC x K) while the reduction over rows is long, so the GEMM alone would find
  // little to split. Rows are cut into `parts` ranges reduced concurrently into partial dW
  // buffers, then summed in order; parts depends on the problem size only, so results are the
  // same on any thread count.
  const int64_t parts = std::clamp<int64_t>(M / 2048, 1, 8);
  const size_t row_bytes = static_cast<size_t>(RSC) * xt.size() + static_cast<size_t>(d.K) * dyt.size();
  const int64_t chunk = std::max<int64_t>(1, rows_per_chunk(d, row_bytes * static_cast<size_t>(parts)));
  std::vector<std::vector<float>> partial(static_cast<size_t>(parts - 1), std::vector<float>(static_cast<size_t>(RSC * d.K)));
  tbb::parallel_for(int64_t{0}, parts, [&](int64_t part) {
    int64_t r0 = M * part / parts, r1 = M * (part + 1) / parts;
    float* out = part == 0 ? dw : partial[static_cast<size_t>(part - 1)].data();
    GemmDesc gp = g;
    std::vector<char> col(static_cast<size_t>(chunk * RSC) * xt.size() + 64);
    std::vector<char> dyn(dyt.type == DType::f32 ? 0 : static_cast<size_t>(chunk * d.K) * dyt.size() + 64);
    for (int64_t m0 = r0; m0 < r1; m0 += chunk) {
      int64_t m1 = std::min(r1, m0 + chunk);
      unfold(d, x, m0, m1, col.data(), xt);
      const void* b = dy + m0 * d.K;
      if (dyt.type != DType::f32) {
        convert_run(dy + m0 * d.K, dyn.data(), static_cast<size_t>((m1 - m0) * d.K), dyt);
        b = dyn.data();
      }
      gp.K = m1 - m0;
      gp.beta = m0 == r0 ? 0.f : 1.f;
      gemm(gp, col.data(), b, out);
    }
    if (r1 == r0) std::memset(out, 0, static_cast<size_t>(RSC * d.K) * sizeof(float));
  });
  for (const auto& p : partial) add(dw, p.data(), dw, static_cast<size_t>(RSC * d.K));
}

// ---- references ----

void conv2d_forward_reference(const Conv2dDesc& d, const float* x, const float* w, const float* bias, float* y) {
  conv2d_validate(d);
  const int64_t OH = d.OH(), OW = d.OW();
  for (int64_t n = 0; n < d.N; ++n)
    for (int64_t oh = 0; oh < OH; ++oh)
      for (int64_t ow = 0; ow < OW; ++ow)
        for (int64_t k = 0; k < d.K; ++k) {
          double acc = bias ? bias[k] : 0.0;
          for (int64_t r = 0; r < d.R; ++r)
            for (int64_t s = 0; s < d.S; ++s) {
              int64_t ih = oh * d.stride_h - d.pad_h + r * d.dil_h, iw = ow * d.stride_w - d.pad_w + s * d.dil_w;
              if (ih < 0 || ih >= d.H || iw < 0 || iw >= d.W) continue;
              for (int64_t c = 0; c < d.C; ++c)
                acc += static_cast<double>(x[((n * d.H + ih) * d.W + iw) * d.C + c]) * w[((r * d.S + s) * d.C + c) * d.K + k];
            }
          y[((n * OH + oh) * OW + ow) * d.K + k] = static_cast<float>(acc);
        }
}

void conv2d_backward_data_reference(const Conv2dDesc& d, const float* dy, const float* w, float* dx) {
  conv2d_validate(d);
  const int64_t OH = d.OH(), OW = d.OW();
  std::vector<double> acc(static_cast<size_t>(d.N * d.H * d.W * d.C), 0.0);
  for (int64_t n = 0; n < d.N; ++n)
    for (int64_t oh = 0; oh < OH; ++oh)
      for (int64_t ow = 0; ow < OW; ++ow)
        for (int64_t r = 0; r < d.R; ++r)
          for (int64_t s = 0; s < d.S; ++s) {
            int64_t ih = oh * d.stride_h - d.pad_h + r * d.dil_h, iw = ow * d.stride_w - d.pad_w + s * d.dil_w;
            if (ih < 0 || ih >= d.H || iw < 0 || iw >= d.W) continue;
            for (int64_t c = 0; c < d.C; ++c)
              for (int64_t k = 0; k < d.K; ++k)
                acc[((n * d.H + ih) * d.W + iw) * d.C + c] +=
                    static_cast<double>(dy[((n * OH + oh) * OW + ow) * d.K + k]) * w[((r * d.S + s) * d.C + c) * d.K + k];
          }
  for (size_t i = 0; i < acc.size(); ++i) dx[i] = static_cast<float>(acc[i]);
}

void conv2d_backward_weights_reference(const Conv2dDesc& d, const float* x, const float* dy, float* dw, float* dbias) {
  conv2d_validate(d);
  const int64_t OH = d.OH(), OW = d.OW();
  std::vector<double> acc(static_cast<size_t>(d.R * d.S * d.C * d.K), 0.0), bacc(static_cast<size_t>(d.K), 0.0);
  for (int64_t n = 0; n < d.N; ++n)
    for (int64_t oh = 0; oh < OH; ++oh)
      for (int64_t ow = 0; ow < OW; ++ow)
        for (int64_t k = 0; k < d.K; ++k) {
          double g = dy[((n * OH + oh) * OW + ow) * d.K + k];
          bacc[k] += g;
          for (int64_t r = 0; r < d.R; ++r)
            for (int64_t s = 0; s < d.S; ++s) {
              int64_t ih = oh * d.stride_h - d.pad_h + r * d.dil_h, iw = ow * d.stride_w - d.pad_w + s * d.dil_w;
              if (ih < 0 || ih >= d.H || iw < 0 || iw >= d.W) continue;
              for (int64_t c = 0; c < d.C; ++c)
                acc[((r * d.S + s) * d.C + c) * d.K + k] += g * x[((n * d.H + ih) * d.W + iw) * d.C + c];
            }
        }
  for (size_t i = 0; i < acc.size(); ++i) dw[i] = static_cast<float>(acc[i]);
  if (dbias) for (int64_t k = 0; k < d.K; ++k) dbias[k] = static_cast<float>(bacc[k]);
}

}  // namespace tessera::kernels
