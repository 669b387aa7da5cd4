// Bulk dtype conversion throughput: tessera's kernels at each ISA rung vs Eigen's bfloat16
// cast (the peer), on the same buffers in one process. Prints GB/s of input read and the ratio.
//   build/benchmarks/convert_bench [n_elements]
#include <tessera/kernels/convert.h>

#include <Eigen/Core>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <vector>

using namespace tessera;
using namespace tessera::kernels;

namespace {

// Best of `reps` timings of fn, in seconds.
double best_time(const std::function<void()>& fn, int reps = 15) {
  double best = 1e30;
  fn();  // warm up
  for (int r = 0; r < reps; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    fn();
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::min(best, s);
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  size_t n = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : (size_t{1} << 22);
  std::vector<float> x(n);
  std::mt19937 rng(1);
  std::normal_distribution<float> dist(0.f, 3.f);
  for (auto& v : x) v = dist(rng);
  std::vector<uint16_t> b(n);
  std::vector<uint8_t> c(n);
  std::vector<Eigen::bfloat16> eb(n);
  double gb = static_cast<double>(n) * 4 / 1e9;

  double eigen = best_time([&] {
    for (size_t i = 0; i < n; ++i) eb[i] = Eigen::bfloat16(x[i]);
  });
  std::printf("convert_bench: %zu f32 elements (%.1f MB), best of 15, one thread\n", n, gb * 1e3);
  std::printf("%-34s %10s %10s %14s\n", "conversion", "time ms", "GB/s in", "vs Eigen bf16");
  std::printf("%-34s %10.3f %10.2f %14s\n", "Eigen::bfloat16(float) [peer]", eigen * 1e3, gb / eigen, "1.00x");
  for (Isa isa : kAllIsas) {
    if (!isa_unavailable_reason(isa).empty() && isa != Isa::scalar) continue;
    if (isa == Isa::avx512_bf16) continue;  // conversions top out at the avx512 rung
    ScopedIsaCap cap(isa);
    double t = best_time([&] { f32_to_bf16(x.data(), b.data(), n); });
    char name[64];
    std::snprintf(name, sizeof name, "tessera f32->bf16 [%s]", isa_name(isa));
    std::printf("%-34s %10.3f %10.2f %13.2fx\n", name, t * 1e3, gb / t, eigen / t);
    Cfp8Format f{Cfp8Layout::e4m3, 7};
    double t8 = best_time([&] { f32_to_cfp8(x.data(), c.data(), n, f); });
    std::snprintf(name, sizeof name, "tessera f32->cfp8 e4m3 [%s]", isa_name(isa));
    std::printf("%-34s %10.3f %10.2f %13.2fx\n", name, t8 * 1e3, gb / t8, eigen / t8);
    double ts = best_time([&] { f32_to_cfp8(x.data(), c.data(), n, f, Rounding::stochastic, 1); });
    std::snprintf(name, sizeof name, "tessera f32->cfp8 SR [%s]", isa_name(isa));
    std::printf("%-34s %10.3f %10.2f %13.2fx\n", name, ts * 1e3, gb / ts, eigen / ts);
  }
  // Sanity: tessera and Eigen agree on every element (both round to nearest even).
  size_t wrong = 0;
  f32_to_bf16(x.data(), b.data(), n);
  for (size_t i = 0; i < n; ++i) wrong += b[i] != Eigen::numext::bit_cast<uint16_t>(eb[i]);
  std::printf("elements where tessera bf16 != Eigen bf16: %zu\n", wrong);
  return wrong == 0 ? 0 : 1;
}
