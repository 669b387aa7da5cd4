// Losses: softmax cross-entropy (mean over the batch, int32 labels; kernels/softmax.h) and
// mean squared error (a plain loop: O(elements), negligible beside the GEMMs).
#include <tessera/core/op_registry.h>
#include <tessera/kernels/softmax.h>

#include <cmath>

namespace tessera {
namespace {

void check_labels(const Node& n, const Tensor& labels, int64_t classes) {
  const int32_t* l = labels.data<int32_t>();
  for (int64_t r = 0; r < labels.numel(); ++r) {
    TESSERA_OP_CHECK(n, l[r] >= 0 && l[r] < classes, "label ", l[r], " in row ", r, " is out of range 0..",
                     classes - 1);
  }
}

void run_xent(OpContext& c) {
  const Tensor& logits = *c.in[0];
  size_t rows = static_cast<size_t>(logits.size(0)), classes = static_cast<size_t>(logits.size(1));
  check_labels(c.node, *c.in[1], logits.size(1));  // so the message names the op and layer
  c.out[0]->data<float>()[0] =
      rows ? kernels::softmax_cross_entropy(logits.data<float>(), c.in[1]->data<int32_t>(),
                                            c.out[1]->data<float>(), rows, classes)
           : 0.f;
}

void run_xent_grad(OpContext& c) {  // (probs, labels, dloss) -> dlogits
  const Tensor& probs = *c.in[0];
  size_t rows = static_cast<size_t>(probs.size(0)), classes = static_cast<size_t>(probs.size(1));
  kernels::softmax_cross_entropy_backward(probs.data<float>(), c.in[1]->data<int32_t>(),
                                          c.in[2]->data<float>()[0], c.out[0]->data<float>(), rows, classes);
}

}  // namespace

void register_loss_ops(OpRegistry& r) {
  OpDef xent{"softmax_xent", 2};  // (logits [B, C], labels i32 [B]) -> (loss [], probs [B, C])
  xent.infer = [](const Node& n, const Ins& in) {
    TESSERA_OP_CHECK(n, in[0]->dtype == DType::f32 && in[0]->shape.ndim() == 2, "logits must be 2-D f32 [batch, classes], got ",
                     in[0]->shape.str(), " ", dtype_name(in[0]->dtype));
    TESSERA_OP_CHECK(n, in[1]->dtype == DType::i32 && in[1]->shape.ndim() == 1 && in[1]->shape[0] == in[0]->shape[0],
                     "labels must be i32 [", in[0]->shape[0], "], got ", in[1]->shape.str(), " ", dtype_name(in[1]->dtype));
    return Outs{{Shape{}, DType::f32}, {in[0]->shape, DType::f32}};
  };
  xent.run = run_xent;
  xent.grad = [](GradContext& g) {
    return Grads{g.apply1("softmax_xent_grad", {g.out(1), g.in(1), g.dy(0)}), -1};
  };
  r.add(xent);

  OpDef xg{"softmax_xent_grad", 3};
  xg.infer = [](const Node&, const Ins& in) { return Outs{{in[0]->shape, DType::f32}}; };
  xg.run = run_xent_grad;
  r.add(xg);

  OpDef mse{"mse", 2};  // mean over all elements of (pred - target)^2
  mse.infer = [](const Node& n, const Ins& in) {
    TESSERA_OP_CHECK(n, in[0]->shape == in[1]->shape, "prediction ", in[0]->shape.str(), " and target ",
                     in[1]->shape.str(), " differ");
    return Outs{{Shape{}, DType::f32}};
  };
  mse.run = [](OpContext& c) {
    const float* p = c.in[0]->data<float>();
    const float* t = c.in[1]->data<float>();
    int64_t n = c.in[0]->numel();
    double s = 0;
    for (int64_t i = 0; i < n; ++i) s += static_cast<double>(p[i] - t[i]) * (p[i] - t[i]);
    c.out[0]->data<float>()[0] = n ? static_cast<float>(s / n) : 0.f;
  };
  mse.grad = [](GradContext& g) {
    int d = g.apply1("mse_grad", {g.in(0), g.in(1), g.dy(0)});
    return Grads{d, g.apply1("scale", {d}, {{"alpha", -1.0}})};
  };
  r.add(mse);

  OpDef mg{"mse_grad", 3};  // 2 (pred - target) / n * dloss
  mg.infer = [](const Node&, const Ins& in) { return Outs{{in[0]->shape, DType::f32}}; };
  mg.run = [](OpContext& c) {
    const float* p = c.in[0]->data<float>();
    const float* t = c.in[1]->data<float>();
    int64_t n = c.in[0]->numel();
    float k = n ? 2.f * c.in[2]->data<float>()[0] / static_cast<float>(n) : 0.f;
    float* d = c.out[0]->data<float>();
    for (int64_t i = 0; i < n; ++i) d[i] = k * (p[i] - t[i]);
  };
  r.add(mg);
}

}  // namespace tessera
