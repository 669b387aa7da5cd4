// gemm(): validation and dispatch. The implementation list is ordered best first, reference
// last (dispatch.h); f32 operands have their own list without avx512_bf16, whose vdpbf16ps
// would round them to bf16.
#include <tessera/kernels/gemm.h>

#include <tessera/core/cfp8.h>
#include <tessera/core/error.h>
#include <tessera/core/log.h>
#include <tessera/kernels/dispatch.h>
#include <tessera/kernels/gemm_driver.h>

#include <atomic>
#include <cstdlib>
#include <string>

namespace tessera::kernels {

#if !defined(TESSERA_HAVE_AVX512_BF16)
const GemmKernel* gemm_kernel_avx512_bf16() { return nullptr; }
double gemm_bf16_dot_speedup() { return 0; }
#endif
#if !defined(TESSERA_HAVE_AVX512)
const GemmKernel* gemm_kernel_avx512() { return nullptr; }
#endif
#if !defined(TESSERA_HAVE_AVX2)
const GemmKernel* gemm_kernel_avx2() { return nullptr; }
#endif

namespace {

// A dtype's name that never throws (a descriptor may carry an invalid id).
std::string type_name(DType t) {
  const int id = static_cast<int>(t);
  return dtype_id_valid(id) ? dtype_name(t) : "dtype id " + std::to_string(id);
}

bool is_narrow(DType t) {
  return t == DType::bf16 || t == DType::cfp8_e4m3 || t == DType::cfp8_e5m2;
}

bool has_bias(Epilogue e) {
  return e == Epilogue::bias || e == Epilogue::bias_relu || e == Epilogue::bias_gelu;
}

void check_operand_bias(const char* which, DType t, int bias) {
  if (!dtype_id_valid(static_cast<int>(t)) || !is_cfp8(t)) return;  // bias ignored otherwise
  TESSERA_CHECK(bias == -1 || (bias >= 0 && bias <= kCfp8MaxBias), "gemm: ", which, "_bias=", bias,
                " is out of range for ", dtype_name(t), " (exponent bias 0..", kCfp8MaxBias,
                ", or -1 for the layout default)");
}

void check_ld(const char* name, int64_t ld, int64_t width, const char* stored) {
  TESSERA_CHECK(ld >= 0, "gemm: ", name, "=", ld, " is negative (0 means tight)");
  TESSERA_CHECK(ld == 0 || ld >= width, "gemm: ", name, "=", ld,
                " is smaller than the width of the stored matrix (", stored, ", width ", width, ")");
}

// The reference is an entry like the others; its `ukernel` is null.
const GemmKernel kReference = {"reference", 1, 1, 1, {}, nullptr, nullptr};

// TESSERA_GEMM_BF16: "dot" (vdpbf16ps whenever the CPU has it), "fma" (always widen to f32),
// "auto" or unset (measure, gemm_bf16_dot_speedup()). -1 auto, 0 fma, 1 dot.
int bf16_policy_from_env() {
  static const int policy = [] {
    const char* v = std::getenv("TESSERA_GEMM_BF16");
    if (!v || !*v || std::string(v) == "auto") return -1;
    if (std::string(v) == "dot") return 1;
    if (std::string(v) == "fma") return 0;
    TESSERA_THROW(ValueError, "TESSERA_GEMM_BF16='", v, "' is not one of: auto, dot, fma");
  }();
  return policy;
}

// Whether bf16 / cfp8 operands may use the avx512_bf16 entry; if not, `why` says why.
bool narrow_may_use_dot(std::string& why) {
  const int forced = gemm_tuning().bf16_dot;
  const int policy = forced >= 0 ? forced : bf16_policy_from_env();
  if (policy >= 0) {
    why = forced >= 0 ? "gemm_set_tuning(bf16_dot = 0)" : "TESSERA_GEMM_BF16=fma";
    return policy == 1;
  }
  // Not usable anyway: select() reports the ISA reason; do not spend time measuring.
  if (gemm_kernel_avx512_bf16() == nullptr || !isa_unavailable_reason(Isa::avx512_bf16).empty()) {
    return true;
  }
  const double speedup = gemm_bf16_dot_speedup();
  if (speedup >= kGemmDotMinSpeedup) return true;
  why = "vdpbf16ps measured at " + std::to_string(speedup) +
        "x the f32 FMA multiply-add rate on this CPU, so bf16/cfp8 are widened to f32 "
        "(TESSERA_GEMM_BF16=dot forces vdpbf16ps)";
  return false;
}

void log_once(std::atomic<bool>& done, const std::string& msg) {
  if (done.exchange(true)) return;
  auto logger = log::get("kernels");
  if (logger->should_log(spdlog::level::debug)) logger->debug("{}", msg);
}

const Impl<GemmKernel>& pick(const GemmDesc& d) {
  static const Impl<GemmKernel> kDot[] = {
      {"avx512_bf16", Isa::avx512_bf16, gemm_kernel_avx512_bf16()},
      {"avx512", Isa::avx512, gemm_kernel_avx512()},
      {"avx2", Isa::avx2, gemm_kernel_avx2()},
      {"reference", Isa::scalar, &kReference},
  };
  static const Impl<GemmKernel> kFma[] = {
      {"avx512", Isa::avx512, gemm_kernel_avx512()},
      {"avx2", Isa::avx2, gemm_kernel_avx2()},
      {"reference", Isa::scalar, &kReference},
  };
  if (d.a_type == DType::f32) {
    static std::atomic<bool> explained{false};
    log_once(explained, "gemm (f32 operands): avx512_bf16 does not apply (vdpbf16ps would round "
                        "f32 inputs to bf16); f32 uses f32 FMA");
    return select("gemm", kFma);
  }
  std::string why;
  if (narrow_may_use_dot(why)) return select("gemm", kDot);
  static std::atomic<bool> explained{false};
  log_once(explained, "gemm (bf16/cfp8 operands): skipped avx512_bf16: " + why);
  return select("gemm", kFma);
}

}  // namespace

const char* epilogue_name(Epilogue e) {
  switch (e) {
    case Epilogue::none: return "none";
    case Epilogue::bias: return "bias";
    case Epilogue::relu: return "relu";
    case Epilogue::gelu: return "gelu";
    case Epilogue::bias_relu: return "bias_relu";
    case Epilogue::bias_gelu: return "bias_gelu";
  }
  return "?";
}

void gemm_validate(const GemmDesc& d) {
  TESSERA_CHECK(d.M >= 0 && d.N >= 0 && d.K >= 0, "gemm: sizes must be >= 0, got M=", d.M,
                " N=", d.N, " K=", d.K);
  const bool pair_ok = (d.a_type == DType::f32 && d.b_type == DType::f32) ||
                       (is_narrow(d.a_type) && is_narrow(d.b_type));
  TESSERA_CHECK_TYPE(pair_ok, "gemm: unsupported operand types a_type=", type_name(d.a_type),
                     " b_type=", type_name(d.b_type),
                     " (supported: f32 x f32, or bf16 / cfp8_e4m3 / cfp8_e5m2 in any mix)");
  TESSERA_CHECK_TYPE(d.c_type == DType::f32 || d.c_type == DType::bf16,
                     "gemm: unsupported output type c_type=", type_name(d.c_type),
                     " (f32 or bf16)");
  check_operand_bias("a", d.a_type, d.a_bias);
  check_operand_bias("b", d.b_type, d.b_bias);
  check_ld("lda", d.lda, d.trans_a ? d.M : d.K, d.trans_a ? "A is KxM with trans_a" : "A is MxK");
  check_ld("ldb", d.ldb, d.trans_b ? d.K : d.N, d.trans_b ? "B is NxK with trans_b" : "B is KxN");
  check_ld("ldc", d.ldc, d.N, "C is MxN");
  const int e = static_cast<int>(d.epilogue);
  TESSERA_CHECK(e >= 0 && e <= static_cast<int>(Epilogue::bias_gelu), "gemm: unknown epilogue ", e);
  TESSERA_CHECK(!has_bias(d.epilogue) || d.bias != nullptr, "gemm: epilogue ",
                epilogue_name(d.epilogue), " needs a bias pointer (N=", d.N, " floats), got nullptr");
}

const char* gemm_impl_name(const GemmDesc& d) { return pick(d).name; }

bool gemm_cfp8_packs_fast() { return active_isa() >= Isa::avx512 && gemm_cfp8_vbmi(); }

void gemm(const GemmDesc& d, const void* A, const void* B, void* C) {
  gemm_validate(d);
  if (d.M == 0 || d.N == 0) return;  // nothing is read or written
  TESSERA_CHECK(A != nullptr || d.K == 0, "gemm: A is nullptr with M=", d.M, " K=", d.K);
  TESSERA_CHECK(B != nullptr || d.K == 0, "gemm: B is nullptr with K=", d.K, " N=", d.N);
  TESSERA_CHECK(C != nullptr, "gemm: C is nullptr with M=", d.M, " N=", d.N);
  const GemmKernel& k = *pick(d).fns;
  if (k.ukernel == nullptr) {
    gemm_reference(d, A, B, C);
  } else {
    gemm_blocked(d, A, B, C, k);
  }
}

}  // namespace tessera::kernels
