// Peers for gemm_bench, each in a translation unit with its own flags: a measured vdpbf16ps /
// FMA peak (AVX512_BF16 flags), Eigen (AVX-512 flags, OpenMP threads) and oneDNN (optional).
#pragma once

#include <cstdint>
#include <functional>
#include <string>

namespace tessera::bench {

struct MatmulShape {
  int64_t M, N, K;
  bool ta, tb;  // A stored KxM / B stored NxK, as GemmDesc::trans_a / trans_b
};

// GFLOP/s of a register-only loop of vdpbf16ps (32 multiply-adds per instruction) or of f32
// vfmadd231ps zmm, on `threads` threads at once; 0 when the CPU or build lacks it.
double peak_bf16_gflops(int threads);
double peak_f32_gflops(int threads);

// Threads for Eigen and oneDNN (both use the OpenMP runtime here).
void set_peer_threads(int threads);
std::string peer_threading();

// C = op(A) op(B), row-major, f32.
std::function<void()> eigen_f32(const MatmulShape& s, const float* A, const float* B, float* C);

bool dnnl_available();
// oneDNN matmul with plain row-major layouts (transposes as format tags), f32 output;
// bf16 == true: A and B are bf16 bits. Returns an empty function without oneDNN.
std::function<void()> dnnl_matmul(const MatmulShape& s, bool bf16, const void* A, const void* B,
                                  float* C);

}  // namespace tessera::bench
