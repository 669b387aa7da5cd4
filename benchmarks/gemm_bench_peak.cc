// Peak multiply-add throughput, measured rather than taken from a data sheet: 24 independent
// zmm accumulators (more than latency x issue width) and nothing else in the loop.
#include "gemm_bench_peers.h"

#include <tessera/kernels/cpu.h>

#include <immintrin.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

namespace tessera::bench {
namespace {

constexpr int kAcc = 24;

template <bool kBf16>
__attribute__((noinline)) float spin(int64_t iters, float seed) {
  __m512 acc[kAcc];
#pragma GCC unroll 24
  for (int j = 0; j < kAcc; ++j) acc[j] = _mm512_set1_ps(seed * static_cast<float>(j));
  const __m512 a = _mm512_set1_ps(1e-9f * seed), b = _mm512_set1_ps(1e-9f);
  // bf16 pairs (1, 1) x (0, 0): no overflow, no denormals, nothing the core treats specially.
  const __m512i pa = _mm512_set1_epi32(0x3f803f80), pb = _mm512_setzero_si512();
  for (int64_t i = 0; i < iters; ++i) {
#pragma GCC unroll 24
    for (int j = 0; j < kAcc; ++j) {
      if constexpr (kBf16) {
        acc[j] = _mm512_dpbf16_ps(acc[j], (__m512bh)pa, (__m512bh)pb);
      } else {
        acc[j] = _mm512_fmadd_ps(a, b, acc[j]);
      }
    }
  }
  __m512 s = acc[0];
#pragma GCC unroll 24
  for (int j = 1; j < kAcc; ++j) s = _mm512_add_ps(s, acc[j]);
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, s);
  float r = 0;
  for (float x : lanes) r += x;
  return r;
}

template <bool kBf16>
double measure(int threads) {
  const int64_t iters = 4'000'000;
  const double flops_per_iter = kAcc * (kBf16 ? 64.0 : 32.0);
  spin<kBf16>(iters / 10, 1.f);  // wake the core up
  double best = 0;
  for (int rep = 0; rep < 3; ++rep) {
    std::atomic<float> sink{0};
    auto t0 = std::chrono::steady_clock::now();
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) pool.emplace_back([&] { sink = sink + spin<kBf16>(iters, 1.f); });
    for (auto& th : pool) th.join();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, flops_per_iter * iters * threads / s / 1e9);
  }
  return best;
}

}  // namespace

double peak_bf16_gflops(int threads) {
  if (kernels::cpu_isa() < kernels::Isa::avx512_bf16) return 0;
  return measure<true>(threads);
}
double peak_f32_gflops(int threads) {
  if (kernels::cpu_isa() < kernels::Isa::avx512) return 0;
  return measure<false>(threads);
}

}  // namespace tessera::bench
