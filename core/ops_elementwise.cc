// Elementwise and shape ops on f32 values: add, sub, mul, scale, bias_add, sum_rows, relu,
// gelu (and their gradients), reshape.
#include <tessera/core/op_registry.h>
#include <tessera/kernels/activation.h>
#include <tessera/kernels/elementwise.h>

#include <cstring>

namespace tessera {
namespace {

size_t numel(const Tensor* t) { return static_cast<size_t>(t->numel()); }
const float* f(const Tensor* t) { return t->data<float>(); }
float* f(Tensor* t) { return t->data<float>(); }

void check_f32(const Node& n, const Ins& in) {
  for (const Value* v : in) TESSERA_OP_CHECK(n, v->dtype == DType::f32, "expects f32 values, got ", dtype_name(v->dtype));
}

Outs same_shapes(const Node& n, const Ins& in) {
  check_f32(n, in);
  for (size_t k = 1; k < in.size(); ++k) {
    TESSERA_OP_CHECK(n, in[k]->shape == in[0]->shape, "shapes differ: ", in[0]->shape.str(), " and ",
                     in[k]->shape.str());
  }
  return Outs{{in[0]->shape, DType::f32}};
}

// Rows x cols view of a value whose last dimension is the channel/feature axis.
std::pair<size_t, size_t> rows_cols(const Shape& s) {
  size_t cols = s.ndim() ? static_cast<size_t>(s[-1]) : 1;
  return {cols ? static_cast<size_t>(s.numel()) / cols : 0, cols};
}

OpDef binary(const char* name, void (*fn)(const float*, const float*, float*, size_t),
             std::function<Grads(GradContext&)> grad) {
  OpDef d{name, 2};
  d.infer = same_shapes;
  d.run = [fn](OpContext& c) { fn(f(c.in[0]), f(c.in[1]), f(c.out[0]), numel(c.in[0])); };
  d.grad = std::move(grad);
  return d;
}

void sub_fn(const float* a, const float* b, float* y, size_t n) {
  kernels::scale(-1.f, b, y, n);
  kernels::add(a, y, y, n);
}

}  // namespace

void register_elementwise_ops(OpRegistry& r) {
  r.add(binary("add", kernels::add, [](GradContext& g) { return Grads{g.dy(0), g.dy(0)}; }));
  r.add(binary("sub", sub_fn, [](GradContext& g) {
    return Grads{g.dy(0), g.apply1("scale", {g.dy(0)}, {{"alpha", -1.0}})};
  }));
  r.add(binary("mul", kernels::mul, [](GradContext& g) {
    return Grads{g.apply1("mul", {g.dy(0), g.in(1)}), g.apply1("mul", {g.dy(0), g.in(0)})};
  }));

  OpDef scale{"scale", 1};
  scale.infer = same_shapes;
  scale.run = [](OpContext& c) {
    kernels::scale(static_cast<float>(c.node.attrs.f("alpha")), f(c.in[0]), f(c.out[0]), numel(c.in[0]));
  };
  scale.grad = [](GradContext& g) {
    return Grads{g.apply1("scale", {g.dy(0)}, {{"alpha", g.node().attrs.f("alpha")}})};
  };
  r.add(scale);

  OpDef bias_add{"bias_add", 2};
  bias_add.infer = [](const Node& n, const Ins& in) {
    check_f32(n, in);
    TESSERA_OP_CHECK(n, in[0]->shape.ndim() >= 1 && in[1]->shape.ndim() == 1 && in[1]->shape[0] == in[0]->shape[-1],
                     "bias of shape ", in[1]->shape.str(), " does not match the last dimension of ",
                     in[0]->shape.str());
    return Outs{{in[0]->shape, DType::f32}};
  };
  bias_add.run = [](OpContext& c) {
    auto [rows, cols] = rows_cols(c.in[0]->shape());
    kernels::bias_add(f(c.in[0]), f(c.in[1]), f(c.out[0]), rows, cols);
  };
  bias_add.grad = [](GradContext& g) { return Grads{g.dy(0), g.apply1("sum_rows", {g.dy(0)})}; };
  r.add(bias_add);

  OpDef sum_rows{"sum_rows", 1};  // [..., C] -> [C]
  sum_rows.infer = [](const Node& n, const Ins& in) {
    check_f32(n, in);
    TESSERA_OP_CHECK(n, in[0]->shape.ndim() >= 1, "needs at least 1 dimension, got ", in[0]->shape.str());
    return Outs{{Shape{in[0]->shape[-1]}, DType::f32}};
  };
  sum_rows.run = [](OpContext& c) {
    auto [rows, cols] = rows_cols(c.in[0]->shape());
    kernels::bias_grad(f(c.in[0]), f(c.out[0]), rows, cols);
  };
  r.add(sum_rows);

  OpDef relu{"relu", 1};
  relu.infer = same_shapes;
  relu.run = [](OpContext& c) { kernels::relu(f(c.in[0]), f(c.out[0]), numel(c.in[0])); };
  // The gradient reads relu's output (y > 0 exactly where x > 0, and NaN where x is NaN), so the
  // pre-activation need not be kept and the executor may fuse relu into its producer.
  relu.grad = [](GradContext& g) { return Grads{g.apply1("relu_grad", {g.out(0), g.dy(0)})}; };
  r.add(relu);
  OpDef relu_grad{"relu_grad", 2};  // (y or x, dy) -> dx
  relu_grad.infer = same_shapes;
  relu_grad.run = [](OpContext& c) { kernels::relu_backward(f(c.in[0]), f(c.in[1]), f(c.out[0]), numel(c.in[0])); };
  r.add(relu_grad);

  OpDef gelu{"gelu", 1};
  gelu.infer = same_shapes;
  gelu.run = [](OpContext& c) { kernels::gelu(f(c.in[0]), f(c.out[0]), numel(c.in[0])); };
  gelu.grad = [](GradContext& g) { return Grads{g.apply1("gelu_grad", {g.in(0), g.dy(0)})}; };
  gelu.cost = [](const Node& n, const Graph& g) {
    double e = static_cast<double>(g.value(n.inputs[0]).shape.numel());
    return OpCost{20 * e, 8 * e};
  };
  r.add(gelu);
  OpDef gelu_grad{"gelu_grad", 2};
  gelu_grad.infer = same_shapes;
  gelu_grad.run = [](OpContext& c) { kernels::gelu_backward(f(c.in[0]), f(c.in[1]), f(c.out[0]), numel(c.in[0])); };
  r.add(gelu_grad);

  OpDef reshape{"reshape", 1};
  reshape.infer = [](const Node& n, const Ins& in) {
    Shape s(n.attrs.ints("shape"));
    TESSERA_OP_CHECK(n, s.numel() == in[0]->shape.numel(), "cannot reshape ", in[0]->shape.str(), " (",
                     in[0]->shape.numel(), " elements) to ", s.str(), " (", s.numel(), " elements)");
    return Outs{{s, in[0]->dtype}};
  };
  reshape.run = [](OpContext& c) { std::memcpy(c.out[0]->raw_data(), c.in[0]->raw_data(), c.in[0]->nbytes()); };
  reshape.grad = [](GradContext& g) {
    return Grads{g.apply1("reshape", {g.dy(0)}, {{"shape", g.value(g.in(0)).shape.dims()}})};
  };
  reshape.cost = [](const Node&, const Graph&) { return OpCost{0, 0}; };
  r.add(reshape);
}

}  // namespace tessera
