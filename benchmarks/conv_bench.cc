// Convolution benchmark: tessera conv2d (NHWC, implicit GEMM) forward, backward-data and
// backward-weights vs oneDNN's convolution on the same shapes in one run, f32 and bf16, on 1
// and 2 threads. oneDNN gets its preferred (blocked) layouts via format_tag::any, reorders
// excluded: its best case. Prints GFLOP/s and tessera / oneDNN.
// cfp8 rows (e4m3 activations and weights, e5m2 gradients) are compared with oneDNN bf16.
//   build/benchmarks/conv_bench [--seconds S] [--threads T] [--types f32,bf16,cfp8] [--shape I] [--no-peer]
#include <tessera/kernels/conv2d.h>

#include <oneapi/tbb/task_arena.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#if defined(TESSERA_BENCH_DNNL)
#include <dnnl.hpp>
#include <omp.h>
#endif

using namespace tessera;
using namespace tessera::kernels;

namespace {

double g_seconds = 0.3;

// Median-free best time per call: repeat for at least g_seconds, keep the fastest.
double best_time(const std::function<void()>& fn) {
  fn();
  double best = 1e30, total = 0;
  int reps = 0;
  while (total < g_seconds || reps < 3) {
    auto t0 = std::chrono::steady_clock::now();
    fn();
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::min(best, s);
    total += s;
    ++reps;
  }
  return best;
}

struct Shape {
  int64_t N, C, K, H;
};

enum class Pass { fwd, bwd_data, bwd_weights };
const char* pass_name(Pass p) { return p == Pass::fwd ? "fwd" : p == Pass::bwd_data ? "bwd_data" : "bwd_wei"; }

#if defined(TESSERA_BENCH_DNNL)
// Returns a runnable oneDNN primitive for one pass, buffers allocated in its chosen layouts.
std::function<void()> dnnl_conv(const Shape& s, Pass pass, bool bf16) {
  using namespace dnnl;
  using dt = memory::data_type;
  struct State {
    engine eng{engine::kind::cpu, 0};
    stream strm{eng};
    primitive prim;
    std::unordered_map<int, memory> args;
  };
  auto st = std::make_shared<State>();
  dt in = bf16 ? dt::bf16 : dt::f32;
  memory::dims src{s.N, s.C, s.H, s.H}, wei{s.K, s.C, 3, 3}, bia{s.K}, dst{s.N, s.K, s.H, s.H};
  memory::dims strides{1, 1}, pad{1, 1};
  auto any = memory::format_tag::any;
  memory::desc src_md(src, in, any), wei_md(wei, in, any), dst_md(dst, dt::f32, any), bia_md(bia, dt::f32, any);
  memory::desc diff_dst_md(dst, in, any), diff_src_md(src, dt::f32, any), diff_wei_md(wei, dt::f32, any);
  auto fwd_pd = convolution_forward::primitive_desc(
      convolution_forward::desc(prop_kind::forward_training, algorithm::convolution_direct, src_md, wei_md, bia_md,
                                dst_md, strides, pad, pad),
      st->eng);
  auto mem = [&](const memory::desc& md) { return memory(md, st->eng); };
  if (pass == Pass::fwd) {
    st->prim = convolution_forward(fwd_pd);
    st->args = {{DNNL_ARG_SRC, mem(fwd_pd.src_desc())}, {DNNL_ARG_WEIGHTS, mem(fwd_pd.weights_desc())},
                {DNNL_ARG_BIAS, mem(fwd_pd.bias_desc())}, {DNNL_ARG_DST, mem(fwd_pd.dst_desc())}};
  } else if (pass == Pass::bwd_data) {
    auto pd = convolution_backward_data::primitive_desc(
        convolution_backward_data::desc(algorithm::convolution_direct, diff_src_md, wei_md, diff_dst_md, strides, pad, pad),
        st->eng, fwd_pd);
    st->prim = convolution_backward_data(pd);
    st->args = {{DNNL_ARG_DIFF_DST, mem(pd.diff_dst_desc())}, {DNNL_ARG_WEIGHTS, mem(pd.weights_desc())},
                {DNNL_ARG_DIFF_SRC, mem(pd.diff_src_desc())}};
  } else {
    auto pd = convolution_backward_weights::primitive_desc(
        convolution_backward_weights::desc(algorithm::convolution_direct, src_md, diff_wei_md, bia_md, diff_dst_md,
                                           strides, pad, pad),
        st->eng, fwd_pd);
    st->prim = convolution_backward_weights(pd);
    st->args = {{DNNL_ARG_SRC, mem(pd.src_desc())}, {DNNL_ARG_DIFF_DST, mem(pd.diff_dst_desc())},
                {DNNL_ARG_DIFF_WEIGHTS, mem(pd.diff_weights_desc())}, {DNNL_ARG_DIFF_BIAS, mem(pd.diff_bias_desc())}};
  }
  for (auto& [k, m] : st->args) std::memset(m.get_data_handle(), 0, m.get_desc().get_size());
  return [st] {
    st->prim.execute(st->strm, st->args);
    st->strm.wait();
  };
}
#endif

}  // namespace

int main(int argc, char** argv) {
  std::vector<int> thread_counts = {1, 2};
  std::string types = "f32,bf16,cfp8";
  int only_shape = -1;  // --shape i: only the i-th shape (0, 1, 2)
  bool peer_on = true;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--seconds" && i + 1 < argc) {
      g_seconds = std::atof(argv[++i]);
    } else if (a == "--threads" && i + 1 < argc) {
      thread_counts = {std::atoi(argv[++i])};
    } else if (a == "--types" && i + 1 < argc) {
      types = argv[++i];
    } else if (a == "--shape" && i + 1 < argc) {
      only_shape = std::atoi(argv[++i]);
    } else if (a == "--no-peer") {
      peer_on = false;
    } else {
      std::fprintf(stderr, "usage: conv_bench [--seconds S] [--threads T] [--types f32,bf16,cfp8] [--shape I] [--no-peer]\n");
      return 2;
    }
  }
  std::vector<DType> computes;
  for (const char* t : {"f32", "bf16", "cfp8"}) {
    if (types.find(t) != std::string::npos) {
      computes.push_back(std::string(t) == "f32" ? DType::f32 : std::string(t) == "bf16" ? DType::bf16 : DType::cfp8_e4m3);
    }
  }
  const Shape shapes[] = {{64, 1, 32, 28}, {64, 32, 64, 14}, {32, 64, 64, 56}};
#if defined(TESSERA_BENCH_DNNL)
  std::printf("conv_bench: 3x3 pad 1 stride 1, NHWC tessera vs oneDNN %s (format any, reorders excluded)\n",
              dnnl_version()->major == 2 ? "2.x" : "");
#else
  std::printf("conv_bench: oneDNN not found at build time (apt-get install libdnnl-dev): tessera only\n");
#endif
  std::printf("%-22s %-9s %-5s %3s %10s %10s %8s  %s\n", "shape (N, C->K, HxW)", "pass", "type", "thr", "tessera", "oneDNN",
              "ratio", "tessera impl");
  for (const Shape& s : shapes) {
    if (only_shape >= 0 && &s - shapes != only_shape) continue;
    Conv2dDesc d;
    d.N = s.N; d.H = d.W = s.H; d.C = s.C; d.K = s.K; d.R = d.S = 3; d.pad_h = d.pad_w = 1;
    std::vector<float> x(d.N * d.H * d.W * d.C, 0.5f), w(9 * d.C * d.K, 0.01f), b(d.K), y(d.N * d.H * d.W * d.K, 0.1f);
    std::vector<float> dx(x.size()), dw(w.size()), db(d.K);
    for (int threads : thread_counts) {
      for (DType compute : computes) {
        // cfp8 (e4m3 forward, e5m2 gradients) has no oneDNN peer: it is compared with oneDNN bf16.
        const bool bf16 = compute != DType::f32;
        for (Pass pass : {Pass::fwd, Pass::bwd_data, Pass::bwd_weights}) {
          d.compute = compute;
          tbb::task_arena arena(threads);
          double t = 0;
          arena.execute([&] {
            t = best_time([&] {
              if (pass == Pass::fwd) conv2d_forward(d, x.data(), w.data(), b.data(), y.data());
              else if (pass == Pass::bwd_data) conv2d_backward_data(d, y.data(), w.data(), dx.data());
              else conv2d_backward_weights(d, x.data(), y.data(), dw.data(), db.data());
            });
          });
          double peer = 0;
#if defined(TESSERA_BENCH_DNNL)
          if (peer_on) {
            omp_set_num_threads(threads);
            auto fn = dnnl_conv(s, pass, bf16);
            peer = best_time(fn);
          }
#endif
          char name[64];
          std::snprintf(name, sizeof name, "%ld, %ld->%ld, %ldx%ld", s.N, s.C, s.K, s.H, s.H);
          double gf = d.flops() / t / 1e9, pgf = peer > 0 ? d.flops() / peer / 1e9 : 0;
          std::printf("%-22s %-9s %-5s %3d %10.1f %10.1f %7.2fx  %s\n", name, pass_name(pass), compute == DType::f32 ? "f32" : compute == DType::bf16 ? "bf16" : "cfp8", threads,
                      gf, pgf, pgf > 0 ? gf / pgf : 0.0,
                      conv2d_impl_name(d, pass == Pass::fwd        ? Conv2dPass::forward
                                          : pass == Pass::bwd_data ? Conv2dPass::backward_data
                                                                   : Conv2dPass::backward_weights));
          std::fflush(stdout);
        }
      }
    }
  }
  return 0;
}
