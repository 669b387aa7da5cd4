// conv2d (NHWC input, RSCK weights, optional bias), max/avg pooling, and their gradients.
// Attributes: stride, pad, dilation as [h, w]; precision as for matmul; pooling: window, stride,
// pad.
#include <tessera/core/op_registry.h>
#include <tessera/core/precision.h>
#include <tessera/kernels/conv2d.h>
#include <tessera/kernels/pool2d.h>

namespace tessera {
namespace {

std::pair<int64_t, int64_t> pair_attr(const Node& n, const char* name, int64_t dflt) {
  if (!n.attrs.has(name)) return {dflt, dflt};
  const auto& v = n.attrs.ints(name);
  TESSERA_OP_CHECK(n, v.size() == 2, "attribute ", name, " must be [h, w], got ", dims_str(v));
  return {v[0], v[1]};
}

// x [N,H,W,C], w [R,S,C,K] -> descriptor (validated; errors name the op and layer).
kernels::Conv2dDesc conv_desc(const Node& n, const Shape& x, const Shape& w) {
  TESSERA_OP_CHECK(n, x.ndim() == 4, "input must be NHWC (4-D), got ", x.str());
  TESSERA_OP_CHECK(n, w.ndim() == 4, "weight must be [R, S, C, K] (4-D), got ", w.str());
  TESSERA_OP_CHECK(n, w[2] == x[3], "input ", x.str(), " has ", x[3], " channels but weight ", w.str(), " expects ",
                   w[2]);
  kernels::Conv2dDesc d;
  d.N = x[0]; d.H = x[1]; d.W = x[2]; d.C = x[3];
  d.R = w[0]; d.S = w[1]; d.K = w[3];
  std::tie(d.stride_h, d.stride_w) = pair_attr(n, "stride", 1);
  std::tie(d.pad_h, d.pad_w) = pair_attr(n, "pad", 0);
  std::tie(d.dil_h, d.dil_w) = pair_attr(n, "dilation", 1);
  try {
    kernels::conv2d_validate(d);
  } catch (const ValueError& e) {
    TESSERA_THROW(ValueError, op_where(n), ": input ", x.str(), ", weight ", w.str(), ": ", e.what());
  }
  return d;
}

// Sets the compute type and cfp8 biases of `d` from the precision policy. roles: which of the
// descriptor's operands (x, w, dy) this op reads, with their input indices for the amax history.
void apply_precision(OpContext& c, kernels::Conv2dDesc& d, int x_in, int w_in, int dy_in) {
  Precision p = precision_from_name(c.node.attrs.s("precision", "fp32"));
  if (p == Precision::fp32) return;
  if (p == Precision::bf16) {
    d.compute = DType::bf16;
    return;
  }
  TESSERA_INTERNAL_ASSERT(c.state.precision, "cfp8 conv2d without precision state");
  PrecisionState& ps = *c.state.precision;
  d.compute = DType::cfp8_e4m3;
  auto observe = [&](int in, Cfp8Layout layout, Cfp8Format& fmt) {
    if (in < 0) return;
    const Tensor& t = *c.in[in];
    const float a = ps.amax_of(c.node.inputs[in], t.data<float>(), static_cast<size_t>(t.numel()));
    fmt = {layout, ps.observe_amax({c.node_id, in}, a, layout)};
  };
  observe(x_in, ps.policy().forward, d.x_fmt);
  observe(w_in, ps.policy().forward, d.w_fmt);
  observe(dy_in, ps.policy().gradient, d.dy_fmt);
}

// Max-pool outputs feed cfp8 convs: when the precision state wants an output's amax, the pool
// measures it while writing (returns where to put it, or null) and it is remembered after.
float* output_amax_slot(const OpContext& c, float& slot) {
  return c.state.precision && c.state.precision->wants_amax(c.out_ids[0]) ? &slot : nullptr;
}
void remember_output_amax(OpContext& c, const float* amax) {
  if (amax) c.state.precision->remember_amax(c.out_ids[0], c.out[0]->data<float>(), static_cast<size_t>(c.out[0]->numel()), *amax);
}

Attrs conv_attrs(const Node& n, const std::vector<int64_t>& input_shape = {}) {
  Attrs a;
  for (const char* k : {"stride", "pad", "dilation"}) if (n.attrs.has(k)) a.set(k, n.attrs.ints(k));
  a.set("precision", n.attrs.s("precision", "fp32"));
  if (!input_shape.empty()) a.set("input_shape", input_shape);
  return a;
}

kernels::Pool2dDesc pool_desc(const Node& n, const Shape& x) {
  TESSERA_OP_CHECK(n, x.ndim() == 4, "input must be NHWC (4-D), got ", x.str());
  kernels::Pool2dDesc p;
  p.N = x[0]; p.H = x[1]; p.W = x[2]; p.C = x[3];
  std::tie(p.R, p.S) = pair_attr(n, "window", 2);
  std::tie(p.stride_h, p.stride_w) = pair_attr(n, "stride", p.R);
  std::tie(p.pad_h, p.pad_w) = pair_attr(n, "pad", 0);
  try {
    kernels::pool2d_validate(p);
  } catch (const ValueError& e) {
    TESSERA_THROW(ValueError, op_where(n), ": input ", x.str(), ": ", e.what());
  }
  return p;
}

Attrs pool_attrs(const Node& n, const Shape& input) {
  Attrs a;
  for (const char* k : {"window", "stride", "pad"}) if (n.attrs.has(k)) a.set(k, n.attrs.ints(k));
  a.set("input_shape", input.dims());
  return a;
}

}  // namespace

void register_conv_ops(OpRegistry& r) {
  OpDef conv{"conv2d", -1};  // (x, w[, bias])
  conv.infer = [](const Node& n, const Ins& in) {
    TESSERA_OP_CHECK(n, in.size() == 2 || in.size() == 3, "takes (input, weight[, bias]), got ", in.size(), " inputs");
    for (const Value* v : in) TESSERA_OP_CHECK(n, v->dtype == DType::f32, "operands must be f32 values");
    precision_from_name(n.attrs.s("precision", "fp32"));
    auto d = conv_desc(n, in[0]->shape, in[1]->shape);
    if (in.size() == 3) {
      TESSERA_OP_CHECK(n, in[2]->shape == Shape({d.K}), "bias ", in[2]->shape.str(), " must be [", d.K, "]");
    }
    return Outs{{Shape{d.N, d.OH(), d.OW(), d.K}, DType::f32}};
  };
  conv.run_fused = [](OpContext& c, const Epilogue& e) {
    auto d = conv_desc(c.node, c.in[0]->shape(), c.in[1]->shape());
    apply_precision(c, d, 0, 1, -1);
    const Tensor* bias = c.in.size() == 3 ? c.in[2] : e.bias;
    TESSERA_INTERNAL_ASSERT(!(c.in.size() == 3 && e.bias), "conv2d with a bias input cannot absorb another bias");
    kernels::conv2d_forward(d, c.in[0]->data<float>(), c.in[1]->data<float>(), bias ? bias->data<float>() : nullptr,
                            c.out[0]->data<float>(),
                            e.act == FusedAct::relu ? kernels::Epilogue::relu : kernels::Epilogue::none);
  };
  conv.run = [run = conv.run_fused](OpContext& c) { run(c, {}); };
  conv.grad = [](GradContext& g) {
    const Node& n = g.node();
    int dx = g.apply1("conv2d_grad_data", {g.dy(0), g.in(1)}, conv_attrs(n, g.value(g.in(0)).shape.dims()));
    Attrs wa = conv_attrs(n, g.value(g.in(1)).shape.dims());
    if (n.inputs.size() == 3) {
      // With a bias: one op gives (dw, db), so the kernel sums db while dy is in cache.
      wa.set("bias_grad", int64_t{1});
      std::vector<int> wb = g.apply("conv2d_grad_weight", {g.in(0), g.dy(0)}, wa);
      return Grads{dx, wb[0], wb[1]};
    }
    return Grads{dx, g.apply1("conv2d_grad_weight", {g.in(0), g.dy(0)}, wa)};
  };
  conv.cost = [](const Node& n, const Graph& g) {
    auto d = conv_desc(n, g.value(n.inputs[0]).shape, g.value(n.inputs[1]).shape);
    double es = n.attrs.s("precision", "fp32") == "fp32" ? 4 : n.attrs.s("precision", "fp32") == "bf16" ? 2 : 1;
    return OpCost{d.flops(), es * (d.N * d.H * d.W * d.C + d.R * d.S * d.C * d.K) + 4.0 * d.N * d.OH() * d.OW() * d.K};
  };
  r.add(conv);

  OpDef gd{"conv2d_grad_data", 2};  // (dy, w) -> dx; attr input_shape
  gd.infer = [](const Node& n, const Ins& in) {
    Shape xs(n.attrs.ints("input_shape"));
    conv_desc(n, xs, in[1]->shape);
    return Outs{{xs, DType::f32}};
  };
  gd.run = [](OpContext& c) {
    auto d = conv_desc(c.node, Shape(c.node.attrs.ints("input_shape")), c.in[1]->shape());
    apply_precision(c, d, -1, 1, 0);
    kernels::conv2d_backward_data(d, c.in[0]->data<float>(), c.in[1]->data<float>(), c.out[0]->data<float>());
  };
  gd.cost = [](const Node& n, const Graph& g) {
    auto d = conv_desc(n, Shape(n.attrs.ints("input_shape")), g.value(n.inputs[1]).shape);
    return OpCost{d.flops(), 4.0 * (d.N * d.H * d.W * d.C + d.N * d.OH() * d.OW() * d.K)};
  };
  r.add(gd);

  // (x, dy) -> dw, or (dw, db) with attr bias_grad = 1; attr input_shape = weight shape.
  OpDef gw{"conv2d_grad_weight", 2};
  gw.infer = [](const Node& n, const Ins& in) {
    Shape ws(n.attrs.ints("input_shape"));
    auto d = conv_desc(n, in[0]->shape, ws);
    Outs o{{ws, DType::f32}};
    if (n.attrs.i("bias_grad", 0)) o.push_back({Shape{d.K}, DType::f32});
    return o;
  };
  gw.run = [](OpContext& c) {
    auto d = conv_desc(c.node, c.in[0]->shape(), Shape(c.node.attrs.ints("input_shape")));
    apply_precision(c, d, 0, -1, 1);
    kernels::conv2d_backward_weights(d, c.in[0]->data<float>(), c.in[1]->data<float>(), c.out[0]->data<float>(),
                                     c.out.size() > 1 ? c.out[1]->data<float>() : nullptr);
  };
  gw.cost = [](const Node& n, const Graph& g) {
    auto d = conv_desc(n, g.value(n.inputs[0]).shape, Shape(n.attrs.ints("input_shape")));
    return OpCost{d.flops(), 4.0 * (d.N * d.H * d.W * d.C + d.N * d.OH() * d.OW() * d.K)};
  };
  r.add(gw);

  OpDef mp{"maxpool2d", 1};  // -> (y, argmax i32)
  mp.infer = [](const Node& n, const Ins& in) {
    auto p = pool_desc(n, in[0]->shape);
    Shape ys{p.N, p.OH(), p.OW(), p.C};
    return Outs{{ys, DType::f32}, {ys, DType::i32}};
  };
  mp.run = [](OpContext& c) {
    auto p = pool_desc(c.node, c.in[0]->shape());
    float slot = 0.f, *amax = output_amax_slot(c, slot);
    kernels::maxpool2d_forward(p, c.in[0]->data<float>(), c.out[0]->data<float>(), c.out[1]->data<int32_t>(), amax);
    remember_output_amax(c, amax);
  };
  mp.grad = [](GradContext& g) {
    return Grads{g.apply1("maxpool2d_grad", {g.dy(0), g.out(1)}, pool_attrs(g.node(), g.value(g.in(0)).shape))};
  };
  r.add(mp);
  OpDef mpg{"maxpool2d_grad", 2};
  mpg.infer = [](const Node& n, const Ins&) { return Outs{{Shape(n.attrs.ints("input_shape")), DType::f32}}; };
  mpg.run_fused = [](OpContext& c, const Epilogue& e) {
    auto p = pool_desc(c.node, c.out[0]->shape());
    TESSERA_INTERNAL_ASSERT(!e.bias && e.act == FusedAct::none, "maxpool2d_grad absorbs only a relu_grad");
    TESSERA_INTERNAL_ASSERT(!e.relu_mask || e.relu_mask->shape() == c.out[0]->shape(), "relu_grad mask shape");
    float slot = 0.f, *amax = output_amax_slot(c, slot);  // a cfp8 conv's gradients read dx
    kernels::maxpool2d_backward(p, c.in[0]->data<float>(), c.in[1]->data<int32_t>(), c.out[0]->data<float>(),
                                e.relu_mask ? e.relu_mask->data<float>() : nullptr, amax);
    remember_output_amax(c, amax);
  };
  mpg.run = [run = mpg.run_fused](OpContext& c) { run(c, {}); };
  r.add(mpg);

  OpDef ap{"avgpool2d", 1};
  ap.infer = [](const Node& n, const Ins& in) {
    auto p = pool_desc(n, in[0]->shape);
    return Outs{{Shape{p.N, p.OH(), p.OW(), p.C}, DType::f32}};
  };
  ap.run = [](OpContext& c) {
    kernels::avgpool2d_forward(pool_desc(c.node, c.in[0]->shape()), c.in[0]->data<float>(), c.out[0]->data<float>());
  };
  ap.grad = [](GradContext& g) {
    return Grads{g.apply1("avgpool2d_grad", {g.dy(0)}, pool_attrs(g.node(), g.value(g.in(0)).shape))};
  };
  r.add(ap);
  OpDef apg{"avgpool2d_grad", 1};
  apg.infer = [](const Node& n, const Ins&) { return Outs{{Shape(n.attrs.ints("input_shape")), DType::f32}}; };
  apg.run = [](OpContext& c) {
    kernels::avgpool2d_backward(pool_desc(c.node, c.out[0]->shape()), c.in[0]->data<float>(), c.out[0]->data<float>());
  };
  r.add(apg);
}

}  // namespace tessera
