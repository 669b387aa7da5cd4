// matmul: C = op(A) op(B) on 2-D f32 values, with the precision policy applied to the operands.
// Attributes: trans_a, trans_b (0/1); precision ("fp32" | "bf16" | "cfp8"); for cfp8, grad_a /
// grad_b (0/1) mark operands that are gradients (encoded e5m2 by default, others e4m3).
#include <tessera/core/op_registry.h>
#include <tessera/core/precision.h>
#include <tessera/kernels/convert.h>
#include <tessera/kernels/gemm.h>

#include <cstdlib>
#include <cstring>

namespace tessera {
namespace {

struct MatmulDims {
  int64_t M, N, K;
};

MatmulDims matmul_dims(const Node& n, const Shape& a, const Shape& b) {
  TESSERA_OP_CHECK(n, a.ndim() == 2 && b.ndim() == 2, "operands must be 2-D, got ", a.str(), " and ", b.str());
  bool ta = n.attrs.i("trans_a", 0), tb = n.attrs.i("trans_b", 0);
  int64_t M = ta ? a[1] : a[0], Ka = ta ? a[0] : a[1];
  int64_t Kb = tb ? b[1] : b[0], N = tb ? b[0] : b[1];
  TESSERA_OP_CHECK(n, Ka == Kb, "inner dimensions differ: ", a.str(), (ta ? "^T" : ""), " x ", b.str(),
                   (tb ? "^T" : ""), " (", Ka, " vs ", Kb, ")");
  return {M, N, Ka};
}

// Rounds an f32 operand to the policy's type. Returns the narrow tensor and fills type/bias.
// cfp8 operands with nearest rounding reach the GEMM as codes where its packing decodes them as
// fast as it widens bf16 (kernels::gemm_cfp8_packs_fast()), else as bf16 holding the same
// values (the products, hence the results, are the same either way). TESSERA_CFP8_OPERANDS=
// codes|bf16 forces one. Stochastic rounding always hands codes.
bool cfp8_operands_as_codes() {
  const char* v = std::getenv("TESSERA_CFP8_OPERANDS");
  if (!v || !*v || std::strcmp(v, "auto") == 0) return kernels::gemm_cfp8_packs_fast();
  if (std::strcmp(v, "codes") == 0) return true;
  if (std::strcmp(v, "bf16") == 0) return false;
  TESSERA_THROW(ValueError, "TESSERA_CFP8_OPERANDS='", v, "' is not one of: auto, codes, bf16");
}

// Parameters (read by the forward and the data-gradient matmul of each step) are rounded once
// per run (PrecisionState::cached_narrow); other operands each time.
Tensor narrow_operand(OpContext& c, int k, Precision p, DType& type, int& bias) {
  const Tensor& x = *c.in[k];
  const int value = c.node.inputs[k];
  PrecisionState* cache = c.graph.value(value).kind == ValueKind::param ? c.state.precision : nullptr;
  if (p == Precision::bf16) {
    type = DType::bf16;
    bias = -1;
    const size_t n = static_cast<size_t>(x.numel());
    Tensor t;
    if (cache && cache->cached_narrow(value, x.data<float>(), n, type, bias, t)) return t;
    t = Tensor::empty(x.shape(), DType::bf16);
    kernels::f32_to_bf16(x.data<float>(), t.data<uint16_t>(), n);
    if (cache) cache->cache_narrow(value, x.data<float>(), n, type, bias, t);
    return t;
  }
  TESSERA_INTERNAL_ASSERT(c.state.precision != nullptr, "cfp8 matmul without precision state");
  PrecisionState& ps = *c.state.precision;
  bool is_grad = c.node.attrs.i(k == 0 ? "grad_a" : "grad_b", 0) != 0;
  Cfp8Layout layout = is_grad ? ps.policy().gradient : ps.policy().forward;
  const DType code_type = layout == Cfp8Layout::e4m3 ? DType::cfp8_e4m3 : DType::cfp8_e5m2;
  const size_t n = static_cast<size_t>(x.numel());
  const float* src = x.data<float>();
  const std::pair<int, int> key{c.node_id, k};
  const uint64_t offset = ps.sr_counter;
  ps.sr_counter += n;
  const bool nearest = ps.policy().rounding == Rounding::nearest_even;
  const bool as_bf16 = nearest && !cfp8_operands_as_codes();
  type = as_bf16 ? DType::bf16 : code_type;
  if (!nearest) cache = nullptr;  // stochastic codes differ with the stream offset: never shared
  // Encodes x with bias b; measures amax(x) on the way when asked.
  auto encode = [&](int b, float* amax) {
    if (as_bf16) {
      Tensor t = Tensor::empty(x.shape(), DType::bf16);
      const float a = kernels::f32_to_cfp8_as_bf16_amax(src, t.data<uint16_t>(), n, {layout, b});
      if (amax) *amax = a;
      return t;
    }
    Tensor t = Tensor::empty(x.shape(), code_type, b);
    if (amax) {
      *amax = kernels::f32_to_cfp8_amax(src, t.data<uint8_t>(), n, {layout, b}, ps.policy().rounding, c.state.seed, offset);
    } else {
      kernels::f32_to_cfp8(src, t.data<uint8_t>(), n, {layout, b}, ps.policy().rounding, c.state.seed, offset);
    }
    return t;
  };
  int b;
  float amax;
  const int guess = ps.predict(key, layout);
  Tensor t;
  if (ps.known_amax(value, src, n, amax) || guess < 0) {
    // Another op scanned this tensor this run, or there is no history yet: amax first.
    b = ps.observe_amax(key, ps.amax_of(value, src, n), layout);
    if (!cache || !cache->cached_narrow(value, src, n, type, b, t)) t = encode(b, nullptr);
  } else {
    // Encode with the bias the history predicts while measuring amax (one pass over x); the
    // policy's bias differs only when amax outgrew the history, and then x is encoded again, so
    // the values are always those of amax-then-encode. (NaN inputs are then counted twice in
    // cfp8_invalid_count.)
    t = encode(guess, &amax);
    ps.remember_amax(value, src, n, amax);
    b = ps.observe_amax(key, amax, layout);
    if (b != guess) t = encode(b, nullptr);
  }
  if (cache) cache->cache_narrow(value, src, n, type, b, t);
  bias = as_bf16 ? -1 : b;
  return t;
}

void run_matmul_fused(OpContext& c, const Epilogue& e) {
  const Tensor& A = *c.in[0];
  const Tensor& B = *c.in[1];
  MatmulDims md = matmul_dims(c.node, A.shape(), B.shape());
  kernels::GemmDesc d;
  d.M = md.M;
  d.N = md.N;
  d.K = md.K;
  d.trans_a = c.node.attrs.i("trans_a", 0);
  d.trans_b = c.node.attrs.i("trans_b", 0);
  if (e.bias) d.bias = e.bias->data<float>();
  d.epilogue = e.bias ? (e.act == FusedAct::relu ? kernels::Epilogue::bias_relu : kernels::Epilogue::bias)
                      : (e.act == FusedAct::relu ? kernels::Epilogue::relu : kernels::Epilogue::none);
  Precision p = precision_from_name(c.node.attrs.s("precision", "fp32"));
  if (p == Precision::fp32) {
    kernels::gemm(d, A.raw_data(), B.raw_data(), c.out[0]->raw_data());
    return;
  }
  Tensor a = narrow_operand(c, 0, p, d.a_type, d.a_bias);
  Tensor b = narrow_operand(c, 1, p, d.b_type, d.b_bias);
  kernels::gemm(d, a.raw_data(), b.raw_data(), c.out[0]->raw_data());
}

void run_matmul(OpContext& c) { run_matmul_fused(c, {}); }

Grads grad_matmul(GradContext& g) {
  const Node& n = g.node();
  bool ta = n.attrs.i("trans_a", 0), tb = n.attrs.i("trans_b", 0);
  std::string prec = n.attrs.s("precision", "fp32");
  int A = g.in(0), B = g.in(1), dC = g.dy(0);
  auto mm = [&](int x, int y, bool tx, bool ty, bool x_is_grad, bool y_is_grad) {
    return g.apply1("matmul", {x, y},
                    {{"trans_a", int64_t{tx}}, {"trans_b", int64_t{ty}}, {"precision", prec},
                     {"grad_a", int64_t{x_is_grad}}, {"grad_b", int64_t{y_is_grad}}});
  };
  int dA, dB;
  if (!ta && !tb) {         // C = A B
    dA = mm(dC, B, false, true, true, false);
    dB = mm(A, dC, true, false, false, true);
  } else if (ta && !tb) {   // C = A^T B
    dA = mm(B, dC, false, true, false, true);
    dB = mm(A, dC, false, false, false, true);
  } else if (!ta && tb) {   // C = A B^T
    dA = mm(dC, B, false, false, true, false);
    dB = mm(dC, A, true, false, true, false);
  } else {                  // C = A^T B^T
    dA = mm(B, dC, true, true, false, true);
    dB = mm(dC, A, true, true, true, false);
  }
  return {dA, dB};
}

}  // namespace

void register_linalg_ops(OpRegistry& r) {
  OpDef mm{"matmul", 2};
  mm.infer = [](const Node& n, const Ins& in) {
    for (const Value* v : in) TESSERA_OP_CHECK(n, v->dtype == DType::f32, "operands must be f32 values, got ", dtype_name(v->dtype));
    precision_from_name(n.attrs.s("precision", "fp32"));
    MatmulDims d = matmul_dims(n, in[0]->shape, in[1]->shape);
    return Outs{{Shape{d.M, d.N}, DType::f32}};
  };
  mm.run = run_matmul;
  mm.run_fused = run_matmul_fused;
  mm.grad = grad_matmul;
  mm.cost = [](const Node& n, const Graph& g) {
    MatmulDims d = matmul_dims(n, g.value(n.inputs[0]).shape, g.value(n.inputs[1]).shape);
    Precision p = precision_from_name(n.attrs.s("precision", "fp32"));
    double es = p == Precision::fp32 ? 4 : p == Precision::bf16 ? 2 : 1;
    return OpCost{2.0 * d.M * d.N * d.K, es * (d.M * d.K + d.K * d.N) + 4.0 * d.M * d.N};
  };
  r.add(mm);
}

}  // namespace tessera
