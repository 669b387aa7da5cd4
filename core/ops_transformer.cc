// Ops for transformer models: layer_norm, embedding, permute, bmm (batched matmul), causal_mask,
// softmax (last dim), dropout; and their gradients.
#include <tessera/core/op_registry.h>
#include <tessera/core/random.h>
#include <tessera/kernels/gemm.h>
#include <tessera/kernels/layernorm.h>
#include <tessera/kernels/softmax.h>

#include <oneapi/tbb/parallel_for.h>

#include <cstring>
#include <limits>

namespace tessera {
namespace {

std::pair<size_t, size_t> rows_cols(const Shape& s) {
  size_t cols = static_cast<size_t>(s[-1]);
  return {cols ? static_cast<size_t>(s.numel()) / cols : 0, cols};
}

// ---- bmm: [B, M, K] x [B, K, N] -> [B, M, N] with transposes of the last two dims ----
struct BmmDims {
  int64_t B, M, N, K;
};
BmmDims bmm_dims(const Node& n, const Shape& a, const Shape& b) {
  TESSERA_OP_CHECK(n, a.ndim() == 3 && b.ndim() == 3 && a[0] == b[0], "operands must be 3-D with one batch size, got ",
                   a.str(), " and ", b.str());
  bool ta = n.attrs.i("trans_a", 0), tb = n.attrs.i("trans_b", 0);
  int64_t M = ta ? a[2] : a[1], Ka = ta ? a[1] : a[2], Kb = tb ? b[2] : b[1], N = tb ? b[1] : b[2];
  TESSERA_OP_CHECK(n, Ka == Kb, "inner dimensions differ: ", a.str(), (ta ? "^T" : ""), " x ", b.str(),
                   (tb ? "^T" : ""));
  return {a[0], M, N, Ka};
}

void run_bmm(OpContext& c) {
  BmmDims d = bmm_dims(c.node, c.in[0]->shape(), c.in[1]->shape());
  kernels::GemmDesc g;
  g.M = d.M;
  g.N = d.N;
  g.K = d.K;
  g.trans_a = c.node.attrs.i("trans_a", 0);
  g.trans_b = c.node.attrs.i("trans_b", 0);
  g.alpha = static_cast<float>(c.node.attrs.f("alpha", 1.0));
  const float* A = c.in[0]->data<float>();
  const float* B = c.in[1]->data<float>();
  float* C = c.out[0]->data<float>();
  // Attention matrices are small: one GEMM per batch entry, batch entries in parallel.
  tbb::parallel_for(int64_t{0}, d.B, [&](int64_t b) {
    kernels::gemm(g, A + b * d.M * d.K, B + b * d.K * d.N, C + b * d.M * d.N);
  });
}

Grads grad_bmm(GradContext& g) {
  bool ta = g.node().attrs.i("trans_a", 0), tb = g.node().attrs.i("trans_b", 0);
  double alpha = g.node().attrs.f("alpha", 1.0);
  int A = g.in(0), B = g.in(1), dC = g.dy(0);
  auto mm = [&](int x, int y, bool tx, bool ty) {
    return g.apply1("bmm", {x, y}, {{"trans_a", int64_t{tx}}, {"trans_b", int64_t{ty}}, {"alpha", alpha}});
  };
  if (!ta && !tb) return Grads{mm(dC, B, false, true), mm(A, dC, true, false)};
  if (ta && !tb) return Grads{mm(B, dC, false, true), mm(A, dC, false, false)};
  if (!ta && tb) return Grads{mm(dC, B, false, false), mm(dC, A, true, false)};
  return Grads{mm(B, dC, true, true), mm(dC, A, true, true)};
}

// ---- permute ----
std::vector<int64_t> perm_of(const Node& n, int ndim) {
  const auto& p = n.attrs.ints("order");
  TESSERA_OP_CHECK(n, static_cast<int>(p.size()) == ndim, "order ", dims_str(p), " does not match ", ndim, " dimensions");
  std::vector<bool> seen(ndim, false);
  for (int64_t v : p) {
    TESSERA_OP_CHECK(n, v >= 0 && v < ndim && !seen[v], "order ", dims_str(p), " is not a permutation");
    seen[v] = true;
  }
  return p;
}

void run_permute(OpContext& c) {
  const Tensor& x = *c.in[0];
  std::vector<int> order;
  for (int64_t v : c.node.attrs.ints("order")) order.push_back(static_cast<int>(v));
  c.out[0]->copy_from(x.permute(order));
}

// ---- dropout: keep with probability 1 - p, scaled by 1 / (1 - p); counter-based mask ----
void run_dropout(OpContext& c) {
  double p = c.node.attrs.f("p");
  const float* x = c.in[0]->data<float>();
  float* y = c.out[0]->data<float>();
  float* mask = c.out[1]->data<float>();
  int64_t n = c.in[0]->numel();
  if (!c.state.training || p == 0) {
    for (int64_t i = 0; i < n; ++i) mask[i] = 1.f;
    std::memcpy(y, x, static_cast<size_t>(n) * 4);
    return;
  }
  uint64_t stream = splitmix64(c.state.seed ^ splitmix64(static_cast<uint64_t>(c.state.step) * 1000003 + c.node_id));
  float keep = static_cast<float>(1.0 / (1.0 - p));
  for (int64_t i = 0; i < n; ++i) {
    mask[i] = random_uniform(stream, static_cast<uint64_t>(i)) >= p ? keep : 0.f;
    y[i] = x[i] * mask[i];
  }
}

}  // namespace

void register_transformer_ops(OpRegistry& r) {
  OpDef ln{"layer_norm", 3};  // (x [..., D], gamma [D], beta [D]) -> (y, mean [rows], rstd [rows])
  ln.infer = [](const Node& n, const Ins& in) {
    const Shape& x = in[0]->shape;
    TESSERA_OP_CHECK(n, x.ndim() >= 1 && in[1]->shape == Shape({x[-1]}) && in[2]->shape == Shape({x[-1]}),
                     "gamma ", in[1]->shape.str(), " and beta ", in[2]->shape.str(), " must be [", x.ndim() ? x[-1] : 0,
                     "] for input ", x.str());
    TESSERA_OP_CHECK(n, n.attrs.f("eps", 1e-5) > 0, "eps must be > 0");
    int64_t rows = x.numel() / std::max<int64_t>(x[-1], 1);
    return Outs{{x, DType::f32}, {Shape{rows}, DType::f32}, {Shape{rows}, DType::f32}};
  };
  ln.run = [](OpContext& c) {
    auto [rows, cols] = rows_cols(c.in[0]->shape());
    kernels::layer_norm(c.in[0]->data<float>(), c.in[1]->data<float>(), c.in[2]->data<float>(),
                        c.out[0]->data<float>(), c.out[1]->data<float>(), c.out[2]->data<float>(), rows, cols,
                        static_cast<float>(c.node.attrs.f("eps", 1e-5)));
  };
  ln.grad = [](GradContext& g) {
    auto d = g.apply("layer_norm_grad", {g.in(0), g.dy(0), g.in(1), g.out(1), g.out(2)});
    return Grads{d[0], d[1], d[2]};
  };
  r.add(ln);
  OpDef lng{"layer_norm_grad", 5};  // (x, dy, gamma, mean, rstd) -> (dx, dgamma, dbeta)
  lng.infer = [](const Node&, const Ins& in) {
    return Outs{{in[0]->shape, DType::f32}, {in[2]->shape, DType::f32}, {in[2]->shape, DType::f32}};
  };
  lng.run = [](OpContext& c) {
    auto [rows, cols] = rows_cols(c.in[0]->shape());
    kernels::layer_norm_backward(c.in[0]->data<float>(), c.in[1]->data<float>(), c.in[2]->data<float>(),
                                 c.in[3]->data<float>(), c.in[4]->data<float>(), c.out[0]->data<float>(),
                                 c.out[1]->data<float>(), c.out[2]->data<float>(), rows, cols);
  };
  r.add(lng);

  OpDef emb{"embedding", 2};  // (table [V, D], ids i32 [...]) -> [..., D]
  emb.infer = [](const Node& n, const Ins& in) {
    TESSERA_OP_CHECK(n, in[0]->shape.ndim() == 2 && in[0]->dtype == DType::f32, "table must be f32 [vocab, dim], got ",
                     in[0]->shape.str());
    TESSERA_OP_CHECK(n, in[1]->dtype == DType::i32, "ids must be i32, got ", dtype_name(in[1]->dtype));
    std::vector<int64_t> s = in[1]->shape.dims();
    s.push_back(in[0]->shape[1]);
    return Outs{{Shape(s), DType::f32}};
  };
  emb.run = [](OpContext& c) {
    int64_t V = c.in[0]->size(0), D = c.in[0]->size(1), n = c.in[1]->numel();
    const int32_t* ids = c.in[1]->data<int32_t>();
    for (int64_t i = 0; i < n; ++i) {
      TESSERA_OP_CHECK(c.node, ids[i] >= 0 && ids[i] < V, "id ", ids[i], " at position ", i, " is outside the vocabulary 0..",
                       V - 1);
    }
    const float* t = c.in[0]->data<float>();
    float* y = c.out[0]->data<float>();
    for (int64_t i = 0; i < n; ++i) std::memcpy(y + i * D, t + ids[i] * D, static_cast<size_t>(D) * 4);
  };
  emb.grad = [](GradContext& g) {
    return Grads{g.apply1("embedding_grad", {g.dy(0), g.in(1)}, {{"vocab", g.value(g.in(0)).shape[0]}}), -1};
  };
  r.add(emb);
  OpDef embg{"embedding_grad", 2};  // (dy [..., D], ids) -> dtable [V, D] (scatter-add)
  embg.infer = [](const Node& n, const Ins& in) {
    return Outs{{Shape{n.attrs.i("vocab"), in[0]->shape[-1]}, DType::f32}};
  };
  embg.run = [](OpContext& c) {
    int64_t D = c.out[0]->size(1), n = c.in[1]->numel();
    float* dt = c.out[0]->data<float>();
    std::memset(dt, 0, c.out[0]->nbytes());
    const float* dy = c.in[0]->data<float>();
    const int32_t* ids = c.in[1]->data<int32_t>();
    for (int64_t i = 0; i < n; ++i)
      for (int64_t d = 0; d < D; ++d) dt[ids[i] * D + d] += dy[i * D + d];
  };
  r.add(embg);

  OpDef perm{"permute", 1};
  perm.infer = [](const Node& n, const Ins& in) {
    auto p = perm_of(n, in[0]->shape.ndim());
    std::vector<int64_t> s;
    for (int64_t v : p) s.push_back(in[0]->shape[static_cast<int>(v)]);
    return Outs{{Shape(s), in[0]->dtype}};
  };
  perm.run = run_permute;
  perm.grad = [](GradContext& g) {
    const auto& p = g.node().attrs.ints("order");
    std::vector<int64_t> inv(p.size());
    for (size_t i = 0; i < p.size(); ++i) inv[p[i]] = static_cast<int64_t>(i);
    return Grads{g.apply1("permute", {g.dy(0)}, {{"order", inv}})};
  };
  r.add(perm);

  OpDef bmm{"bmm", 2};
  bmm.infer = [](const Node& n, const Ins& in) {
    BmmDims d = bmm_dims(n, in[0]->shape, in[1]->shape);
    return Outs{{Shape{d.B, d.M, d.N}, DType::f32}};
  };
  bmm.run = run_bmm;
  bmm.grad = grad_bmm;
  bmm.cost = [](const Node& n, const Graph& g) {
    BmmDims d = bmm_dims(n, g.value(n.inputs[0]).shape, g.value(n.inputs[1]).shape);
    return OpCost{2.0 * d.B * d.M * d.N * d.K, 4.0 * d.B * (d.M * d.K + d.K * d.N + d.M * d.N)};
  };
  r.add(bmm);

  OpDef mask{"causal_mask", 1};  // [..., T, T]: entries above the diagonal become -inf
  mask.infer = [](const Node& n, const Ins& in) {
    const Shape& s = in[0]->shape;
    TESSERA_OP_CHECK(n, s.ndim() >= 2 && s[-1] == s[-2], "needs square trailing dims [..., T, T], got ", s.str());
    return Outs{{s, DType::f32}};
  };
  mask.run = [](OpContext& c) {
    int64_t T = c.in[0]->size(-1), mats = c.in[0]->numel() / std::max<int64_t>(T * T, 1);
    const float* x = c.in[0]->data<float>();
    float* y = c.out[0]->data<float>();
    const float ninf = -std::numeric_limits<float>::infinity();
    for (int64_t m = 0; m < mats; ++m)
      for (int64_t i = 0; i < T; ++i)
        for (int64_t j = 0; j < T; ++j) y[(m * T + i) * T + j] = j > i ? ninf : x[(m * T + i) * T + j];
  };
  mask.grad = [](GradContext& g) { return Grads{g.apply1("causal_mask_grad", {g.dy(0)})}; };
  r.add(mask);
  OpDef maskg{"causal_mask_grad", 1};  // zero above the diagonal
  maskg.infer = [](const Node&, const Ins& in) { return Outs{{in[0]->shape, DType::f32}}; };
  maskg.run = [](OpContext& c) {
    int64_t T = c.in[0]->size(-1), mats = c.in[0]->numel() / std::max<int64_t>(T * T, 1);
    const float* x = c.in[0]->data<float>();
    float* y = c.out[0]->data<float>();
    for (int64_t m = 0; m < mats; ++m)
      for (int64_t i = 0; i < T; ++i)
        for (int64_t j = 0; j < T; ++j) y[(m * T + i) * T + j] = j > i ? 0.f : x[(m * T + i) * T + j];
  };
  r.add(maskg);

  OpDef sm{"softmax", 1};  // over the last dimension
  sm.infer = [](const Node&, const Ins& in) { return Outs{{in[0]->shape, DType::f32}}; };
  sm.run = [](OpContext& c) {
    auto [rows, cols] = rows_cols(c.in[0]->shape());
    kernels::softmax(c.in[0]->data<float>(), c.out[0]->data<float>(), rows, cols);
  };
  sm.grad = [](GradContext& g) { return Grads{g.apply1("softmax_grad", {g.out(0), g.dy(0)})}; };
  r.add(sm);
  OpDef smg{"softmax_grad", 2};  // (y, dy) -> dx
  smg.infer = [](const Node&, const Ins& in) { return Outs{{in[0]->shape, DType::f32}}; };
  smg.run = [](OpContext& c) {
    auto [rows, cols] = rows_cols(c.in[0]->shape());
    kernels::softmax_backward(c.in[0]->data<float>(), c.in[1]->data<float>(), c.out[0]->data<float>(), rows, cols);
  };
  r.add(smg);

  OpDef sl{"slice_rows", 1};  // rows [start, end) of a 2-D value
  sl.infer = [](const Node& n, const Ins& in) {
    const Shape& x = in[0]->shape;
    int64_t a = n.attrs.i("start"), b = n.attrs.i("end");
    TESSERA_OP_CHECK(n, x.ndim() == 2 && a >= 0 && a <= b && b <= x[0], "rows [", a, ", ", b, ") of ", x.str());
    return Outs{{Shape{b - a, x[1]}, in[0]->dtype}};
  };
  sl.run = [](OpContext& c) {
    size_t row = static_cast<size_t>(c.in[0]->size(1)) * c.in[0]->itemsize();
    std::memcpy(c.out[0]->raw_data(), static_cast<const char*>(c.in[0]->raw_data()) + c.node.attrs.i("start") * row,
                c.out[0]->nbytes());
  };
  sl.grad = [](GradContext& g) {
    return Grads{g.apply1("slice_rows_grad", {g.dy(0)},
                          {{"start", g.node().attrs.i("start")}, {"rows", g.value(g.in(0)).shape[0]}})};
  };
  r.add(sl);
  OpDef slg{"slice_rows_grad", 1};  // dy placed at rows [start, start + dy rows) of zeros
  slg.infer = [](const Node& n, const Ins& in) { return Outs{{Shape{n.attrs.i("rows"), in[0]->shape[1]}, DType::f32}}; };
  slg.run = [](OpContext& c) {
    std::memset(c.out[0]->raw_data(), 0, c.out[0]->nbytes());
    size_t row = static_cast<size_t>(c.in[0]->size(1)) * 4;
    std::memcpy(static_cast<char*>(c.out[0]->raw_data()) + c.node.attrs.i("start") * row, c.in[0]->raw_data(),
                c.in[0]->nbytes());
  };
  r.add(slg);

  OpDef drop{"dropout", 1};  // -> (y, mask); attr p in [0, 1)
  drop.infer = [](const Node& n, const Ins& in) {
    double p = n.attrs.f("p");
    TESSERA_OP_CHECK(n, p >= 0 && p < 1, "probability ", p, " must be in [0, 1)");
    return Outs{{in[0]->shape, DType::f32}, {in[0]->shape, DType::f32}};
  };
  drop.run = run_dropout;
  drop.grad = [](GradContext& g) { return Grads{g.apply1("mul", {g.dy(0), g.out(1)})}; };
  r.add(drop);
}

}  // namespace tessera
