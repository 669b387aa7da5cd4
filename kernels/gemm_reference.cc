// The scalar reference GEMM: decode both operands to f32 (exact for bf16 and cfp8), multiply
// in k order with f32 sums, then the epilogue element by element. Simple on purpose: it is the
// oracle the vectorized rungs are tested against, and the last entry of gemm's dispatch list.
#include <tessera/kernels/gemm.h>

#include <tessera/core/bf16.h>
#include <tessera/core/cfp8.h>
#include <tessera/kernels/gemm_driver.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace tessera::kernels {
namespace {

float load(const GemmOperand& op, int64_t x, int64_t k) {
  const int64_t off = x * op.sx + k * op.sk;
  switch (op.type) {
    case DType::f32: return static_cast<const float*>(op.data)[off];
    case DType::bf16: return bf16_to_f32(static_cast<const uint16_t*>(op.data)[off]);
    default: return cfp8_decode(static_cast<const uint8_t*>(op.data)[off], op.fmt);
  }
}

}  // namespace

void gemm_reference(const GemmDesc& d, const void* A, const void* B, void* C) {
  gemm_validate(d);
  const int64_t M = d.M, N = d.N, K = d.K;
  if (M == 0 || N == 0) return;
  const GemmOperand opa = gemm_operand_a(d, A), opb = gemm_operand_b(d, B);
  std::vector<float> a(static_cast<size_t>(M * K)), b(static_cast<size_t>(K * N));
  for (int64_t i = 0; i < M; ++i) {
    for (int64_t k = 0; k < K; ++k) a[i * K + k] = load(opa, i, k);
  }
  for (int64_t k = 0; k < K; ++k) {
    for (int64_t j = 0; j < N; ++j) b[k * N + j] = load(opb, j, k);
  }
  const bool has_bias = d.epilogue == Epilogue::bias || d.epilogue == Epilogue::bias_relu ||
                        d.epilogue == Epilogue::bias_gelu;
  const bool relu = d.epilogue == Epilogue::relu || d.epilogue == Epilogue::bias_relu;
  const bool gelu = d.epilogue == Epilogue::gelu || d.epilogue == Epilogue::bias_gelu;
  const int64_t ldc = d.ldc ? d.ldc : N;
  std::vector<float> acc(static_cast<size_t>(N));
  for (int64_t i = 0; i < M; ++i) {
    std::fill(acc.begin(), acc.end(), 0.f);
    for (int64_t k = 0; k < K; ++k) {
      const float av = a[i * K + k];
      const float* brow = &b[k * N];
      for (int64_t j = 0; j < N; ++j) acc[j] += av * brow[j];
    }
    for (int64_t j = 0; j < N; ++j) {
      float x = d.alpha * acc[j];
      if (d.beta != 0.f) {
        const float c = d.c_type == DType::bf16
                            ? bf16_to_f32(static_cast<const uint16_t*>(C)[i * ldc + j])
                            : static_cast<const float*>(C)[i * ldc + j];
        x += d.beta * c;
      }
      if (has_bias) x += d.bias[j];
      if (relu) x = x < 0.f ? 0.f : x;  // NaN stays NaN
      if (gelu) x = 0.5f * x * (1.f + std::erf(x * 0.70710678118654752f));
      if (d.c_type == DType::bf16) {
        static_cast<uint16_t*>(C)[i * ldc + j] = f32_to_bf16(x);
      } else {
        static_cast<float*>(C)[i * ldc + j] = x;
      }
    }
  }
}

}  // namespace tessera::kernels
