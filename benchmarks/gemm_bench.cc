// GEMM throughput: tessera (bf16, cfp8, f32) vs oneDNN matmul (bf16, f32) and Eigen (f32), all
// in this process on the same buffers, at 1 and 2 threads; % of a vdpbf16ps / FMA peak measured
// in the same binary. Reproducer:
//
//   build/benchmarks/gemm_bench                    # everything
//   build/benchmarks/gemm_bench --threads 2 --square 1024 --no-train
//   build/benchmarks/gemm_bench --quick            # squares up to 1024, fewer repetitions
//   build/benchmarks/gemm_bench --best             # fastest run per cell (a shared machine)
//   build/benchmarks/gemm_bench --only "square 1024,fwd 64x"   # problems by name
//
// Columns: GFLOP/s from the median of the timed repetitions (2 M N K flops per GEMM);
// "%pk" is tessera's share of the measured peak of the instruction it ran on (vdpbf16ps, or
// FMA where bf16/cfp8 are widened to f32 and for f32); "dot" is bf16 forced onto the
// vdpbf16ps kernel; "x dnnl" is oneDNN's time / tessera's (> 1: tessera faster); "bad" counts
// elements of tessera's bf16 result that differ from oneDNN's by more than 1e-3 relative.
// Training shapes are the three GEMMs of a linear layer y = x W (x: M x K, W: K x N):
// fwd = x W (NN), dgrad = dy W^T (trans_b, B is W), wgrad = x^T dy (trans_a, A is x);
// cfp8 uses e4m3 for x and W and e5m2 for dy, as the precision policy does; tessera bf16 and
// cfp8 are timed in alternation (one bf16 call, one cfp8 call, ...) and "x bf16" is bf16's
// time / cfp8's, so that ratio compares runs under the same machine load.
#include "gemm_bench_peers.h"

#include <tessera/core/bf16.h>
#include <tessera/core/cfp8.h>
#include <tessera/kernels/cpu.h>
#include <tessera/kernels/gemm.h>
#include <tessera/kernels/gemm_driver.h>

#include <oneapi/tbb/task_arena.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

using namespace tessera;
using namespace tessera::kernels;
using tessera::bench::MatmulShape;

namespace {

struct Options {
  std::vector<int> threads = {1, 2};
  std::vector<int64_t> square = {256, 512, 1024, 2048, 4096};
  bool train = true;
  double min_seconds = 0.3;
  bool best = false;  // report the fastest run instead of the median
  std::vector<std::string> only;  // problem-name substrings to keep (empty: all)
};

std::vector<int64_t> parse_list(const char* s) {
  std::vector<int64_t> v;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) v.push_back(std::atoll(item.c_str()));
  return v;
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&] {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--threads") {
      o.threads.clear();
      for (int64_t t : parse_list(next())) o.threads.push_back(static_cast<int>(t));
    } else if (a == "--square") {
      o.square = parse_list(next());
    } else if (a == "--no-square") {
      o.square.clear();
    } else if (a == "--no-train") {
      o.train = false;
    } else if (a == "--quick") {
      o.square = {256, 512, 1024};
      o.min_seconds = 0.1;
    } else if (a == "--seconds") {
      o.min_seconds = std::atof(next());
    } else if (a == "--best") {
      o.best = true;
    } else if (a == "--only") {
      std::stringstream ss(next());
      std::string item;
      while (std::getline(ss, item, ',')) o.only.push_back(item);
    } else {
      std::fprintf(stderr,
                   "usage: gemm_bench [--threads 1,2] [--square 256,1024 | --no-square] "
                   "[--no-train] [--quick] [--seconds S] [--best] [--only fwd,256x784]\n");
      std::exit(2);
    }
  }
  return o;
}

bool g_best = false;

// Median (or, with --best, minimum) seconds of fn over at least 3 runs and `min_seconds`,
// after a warm-up run.
double median_time(const std::function<void()>& fn, double min_seconds) {
  fn();
  std::vector<double> t;
  double total = 0;
  while (t.size() < 3 || (total < min_seconds && t.size() < 200)) {
    auto t0 = std::chrono::steady_clock::now();
    fn();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    t.push_back(s);
    total += s;
  }
  std::sort(t.begin(), t.end());
  return g_best ? t.front() : t[t.size() / 2];
}

// The same statistic for two functions timed in alternation (a, b, a, b, ...), so that both
// see the same machine load: their ratio is what a noisy shared machine can still measure.
std::pair<double, double> paired_time(const std::function<void()>& a, const std::function<void()>& b,
                                      double min_seconds) {
  a();
  b();
  std::vector<double> ta, tb;
  double total = 0;
  auto one = [](const std::function<void()>& fn) {
    auto t0 = std::chrono::steady_clock::now();
    fn();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  while (ta.size() < 3 || (total < 2 * min_seconds && ta.size() < 200)) {
    ta.push_back(one(a));
    tb.push_back(one(b));
    total += ta.back() + tb.back();
  }
  std::sort(ta.begin(), ta.end());
  std::sort(tb.begin(), tb.end());
  return g_best ? std::make_pair(ta.front(), tb.front()) : std::make_pair(ta[ta.size() / 2], tb[tb.size() / 2]);
}

// Let the other runtime's spinning threads (OpenMP, TBB) go to sleep before the next timing.
void settle() { std::this_thread::sleep_for(std::chrono::milliseconds(30)); }

struct Problem {
  std::string name;
  MatmulShape s;
  DType cfp8_a, cfp8_b;
};

std::vector<Problem> problems(const Options& o) {
  std::vector<Problem> v;
  for (int64_t n : o.square) {
    v.push_back({"square " + std::to_string(n), {n, n, n, false, false}, DType::cfp8_e4m3, DType::cfp8_e4m3});
  }
  if (o.train) {
    const int64_t kn[][2] = {{784, 512}, {512, 512}, {3136, 128}, {1024, 4096}};
    for (int64_t m : {64, 256}) {
      for (const auto& p : kn) {
        const int64_t K = p[0], N = p[1];
        const std::string tag = std::to_string(m) + "x" + std::to_string(K) + "x" + std::to_string(N);
        v.push_back({"fwd " + tag, {m, N, K, false, false}, DType::cfp8_e4m3, DType::cfp8_e4m3});
        v.push_back({"dgrad " + tag, {m, K, N, false, true}, DType::cfp8_e5m2, DType::cfp8_e4m3});
        v.push_back({"wgrad " + tag, {K, N, m, true, false}, DType::cfp8_e4m3, DType::cfp8_e5m2});
      }
    }
  }
  if (!o.only.empty()) {
    std::vector<Problem> kept;
    for (const Problem& p : v) {
      for (const std::string& key : o.only) {
        if (p.name.find(key) != std::string::npos) {
          kept.push_back(p);
          break;
        }
      }
    }
    v = kept;
  }
  return v;
}

struct Buffers {
  std::vector<float> a32, b32, c_t, c_d, c_e;
  std::vector<uint16_t> a16, b16;
  std::vector<uint8_t> a8, b8;
};

Buffers make_buffers(const MatmulShape& s) {
  Buffers b;
  const size_t na = static_cast<size_t>(s.M * s.K), nb = static_cast<size_t>(s.K * s.N),
               nc = static_cast<size_t>(s.M * s.N);
  std::mt19937 rng(42);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  b.a32.resize(na);
  b.b32.resize(nb);
  for (auto& x : b.a32) x = u(rng);
  for (auto& x : b.b32) x = u(rng);
  b.a16.resize(na);
  b.b16.resize(nb);
  for (size_t i = 0; i < na; ++i) b.a16[i] = f32_to_bf16(b.a32[i]);
  for (size_t i = 0; i < nb; ++i) b.b16[i] = f32_to_bf16(b.b32[i]);
  std::uniform_int_distribution<int> code(0, 255);
  b.a8.resize(na);
  b.b8.resize(nb);
  for (auto& x : b.a8) x = static_cast<uint8_t>(code(rng));
  for (auto& x : b.b8) x = static_cast<uint8_t>(code(rng));
  b.c_t.assign(nc, 0.f);
  b.c_d.assign(nc, 0.f);
  b.c_e.assign(nc, 0.f);
  return b;
}

GemmDesc desc(const MatmulShape& s, DType a, DType b) {
  GemmDesc d;
  d.M = s.M;
  d.N = s.N;
  d.K = s.K;
  d.trans_a = s.ta;
  d.trans_b = s.tb;
  d.a_type = a;
  d.b_type = b;
  return d;
}

int64_t count_bad(const std::vector<float>& x, const std::vector<float>& ref) {
  int64_t bad = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    if (!(std::fabs(x[i] - ref[i]) <= 1e-3 * (std::fabs(ref[i]) + 1.0))) ++bad;
  }
  return bad;
}

std::string fmt(double v, const char* f = "%.1f") {
  if (v <= 0) return "-";
  char buf[32];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  g_best = o.best;
  const auto& cpu = cpu_features();
  std::printf("gemm_bench: %s, %u hardware threads, active ISA %s\n", cpu.brand.c_str(),
              std::thread::hardware_concurrency(), isa_name(active_isa()));
  std::printf("peers: oneDNN %s; Eigen f32; threading: tessera oneTBB task_arena(n), peers %s\n",
              bench::dnnl_available() ? "matmul (plain layouts, f32 output)" : "NOT FOUND (tessera and Eigen only)",
              bench::peer_threading().c_str());
  std::printf("GFLOP/s from the %s of >= 3 runs and >= %.2f s per cell\n",
              o.best ? "fastest" : "median", o.min_seconds);

  for (int threads : o.threads) {
    bench::set_peer_threads(threads);
    const double pk16 = bench::peak_bf16_gflops(threads), pk32 = bench::peak_f32_gflops(threads);
    std::printf("\n== %d thread%s: measured peak vdpbf16ps %.1f GFLOP/s, f32 FMA %.1f GFLOP/s ==\n",
                threads, threads > 1 ? "s" : "", pk16, pk32);
    GemmDesc probe;
    probe.a_type = probe.b_type = DType::bf16;
    const std::string narrow_impl = gemm_impl_name(probe);
    const bool narrow_dot = narrow_impl == "avx512_bf16";
    const double pk_narrow = narrow_dot ? pk16 : pk32;
    std::printf("bf16/cfp8 dispatch: %s (%s); \"dot\" = the vdpbf16ps kernel forced\n",
                narrow_impl.c_str(), narrow_dot ? "vdpbf16ps" : "widened to f32, FMA");
    std::printf("%-22s | %8s %8s %5s %7s %4s | %8s %5s | %8s %5s %6s | %8s %8s %8s %5s %7s\n", "problem",
                "bf16 tes", "dnnl", "%pk", "x dnnl", "bad", "dot", "%pk", "cfp8 tes", "%pk", "x bf16", "f32 tes",
                "dnnl", "Eigen", "%pk", "x dnnl");
    tbb::task_arena arena(threads);
    for (const Problem& p : problems(o)) {
      const MatmulShape& s = p.s;
      Buffers b = make_buffers(s);
      const double gflop = 2.0 * s.M * s.N * s.K / 1e9;
      auto tessera_time = [&](DType at, DType bt, const void* A, const void* B, int dot = -1) {
        const GemmDesc d = desc(s, at, bt);
        GemmTuning tu;
        tu.bf16_dot = dot;
        gemm_set_tuning(tu);
        double t = 0;
        arena.execute([&] { t = median_time([&] { gemm(d, A, B, b.c_t.data()); }, o.min_seconds); });
        gemm_set_tuning({});
        settle();
        return t;
      };
      auto peer_time = [&](const std::function<void()>& fn) {
        if (!fn) return 0.0;
        const double t = median_time(fn, o.min_seconds);
        settle();
        return t;
      };
      // bf16 as dispatched and cfp8, timed in alternation (the cfp8 / bf16 ratio is a goal)
      double t16 = 0, t8 = 0;
      {
        const GemmDesc d16 = desc(s, DType::bf16, DType::bf16), d8 = desc(s, p.cfp8_a, p.cfp8_b);
        std::vector<float> c8(b.c_t.size());
        arena.execute([&] {
          std::tie(t16, t8) = paired_time([&] { gemm(d16, b.a16.data(), b.b16.data(), b.c_t.data()); },
                                          [&] { gemm(d8, b.a8.data(), b.b8.data(), c8.data()); }, o.min_seconds);
        });
        settle();
      }
      const std::vector<float> tessera16 = b.c_t;
      const double tdot = pk16 > 0 ? tessera_time(DType::bf16, DType::bf16, b.a16.data(), b.b16.data(), 1) : 0;
      const double d16 = peer_time(bench::dnnl_matmul(s, true, b.a16.data(), b.b16.data(), b.c_d.data()));
      const int64_t bad = d16 > 0 ? count_bad(tessera16, b.c_d) : -1;
      // f32
      const double t32 = tessera_time(DType::f32, DType::f32, b.a32.data(), b.b32.data());
      const double d32 = peer_time(bench::dnnl_matmul(s, false, b.a32.data(), b.b32.data(), b.c_d.data()));
      const double e32 = peer_time(bench::eigen_f32(s, b.a32.data(), b.b32.data(), b.c_e.data()));

      auto g = [&](double t) { return t > 0 ? gflop / t : 0.0; };
      auto pct = [&](double t, double peak) { return peak > 0 ? fmt(100 * g(t) / peak, "%.0f") : std::string("-"); };
      std::printf("%-22s | %8s %8s %5s %7s %4s | %8s %5s | %8s %5s %6s | %8s %8s %8s %5s %7s\n", p.name.c_str(),
                  fmt(g(t16)).c_str(), fmt(g(d16)).c_str(), pct(t16, pk_narrow).c_str(),
                  fmt(d16 > 0 ? d16 / t16 : 0, "%.2fx").c_str(), bad >= 0 ? std::to_string(bad).c_str() : "-",
                  fmt(g(tdot)).c_str(), pct(tdot, pk16).c_str(), fmt(g(t8)).c_str(), pct(t8, pk_narrow).c_str(), fmt(t16 / t8, "%.2fx").c_str(),
                  fmt(g(t32)).c_str(), fmt(g(d32)).c_str(), fmt(g(e32)).c_str(), pct(t32, pk32).c_str(),
                  fmt(d32 > 0 ? d32 / t32 : 0, "%.2fx").c_str());
      std::fflush(stdout);
    }
  }
  return 0;
}
