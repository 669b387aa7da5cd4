#include <tessera/runtime/models.h>

#include <tessera/core/random.h>

namespace tessera::models {

Mlp::Mlp(uint64_t seed, int64_t in, int64_t hidden, int64_t classes) {
  fc1_ = add_module("fc1", std::make_shared<nn::Linear>(in, hidden, splitmix64(seed + 1)));
  fc2_ = add_module("fc2", std::make_shared<nn::Linear>(hidden, hidden, splitmix64(seed + 2)));
  fc3_ = add_module("fc3", std::make_shared<nn::Linear>(hidden, classes, splitmix64(seed + 3)));
}

nn::Var Mlp::forward(nn::Var x) {
  x = nn::flatten(x);
  x = nn::relu((*fc1_)(x));
  x = nn::relu((*fc2_)(x));
  return (*fc3_)(x);
}

Cnn::Cnn(uint64_t seed) {
  conv1_ = add_module("conv1", std::make_shared<nn::Conv2d>(1, 32, 3, splitmix64(seed + 11), 1, 1));
  conv2_ = add_module("conv2", std::make_shared<nn::Conv2d>(32, 64, 3, splitmix64(seed + 12), 1, 1));
  pool_ = add_module("pool", std::make_shared<nn::MaxPool2d>(2));
  fc1_ = add_module("fc1", std::make_shared<nn::Linear>(3136, 128, splitmix64(seed + 13)));
  fc2_ = add_module("fc2", std::make_shared<nn::Linear>(128, 10, splitmix64(seed + 14)));
}

nn::Var Cnn::forward(nn::Var x) {
  x = (*pool_)(nn::relu((*conv1_)(x)));
  x = (*pool_)(nn::relu((*conv2_)(x)));
  x = nn::relu((*fc1_)(nn::flatten(x)));
  return (*fc2_)(x);
}

TransformerLm::TransformerLm(int64_t v, int64_t s, int64_t d, int64_t heads, int64_t layers, uint64_t seed)
    : vocab(v), seq(s), dim(d) {
  tok_ = add_module("tok", std::make_shared<nn::Embedding>(v, d, splitmix64(seed + 21)));
  add_parameter("pos", Tensor::normal({s * d}, 0.0, 0.02, splitmix64(seed + 22)));
  for (int64_t i = 0; i < layers; ++i) {
    blocks_.push_back(add_module("block" + std::to_string(i),
                                 std::make_shared<nn::TransformerBlock>(d, heads, splitmix64(seed + 30 + i))));
  }
  ln_ = add_module("ln", std::make_shared<nn::LayerNorm>(d));
  head_ = add_module("head", std::make_shared<nn::Linear>(d, v, splitmix64(seed + 23)));
}

nn::Var TransformerLm::forward(nn::Var ids) {
  nn::Trace& t = *ids.trace();
  const int64_t B = ids.shape()[0];
  if (ids.shape() != Shape({B, seq})) {
    TESSERA_THROW(ValueError, "transformer expects token ids [batch, ", seq, "], got ", ids.shape().str());
  }
  nn::Var x = (*tok_)(ids);  // [B, T, D]
  // Position embeddings: one [T * D] vector added to every sequence.
  x = nn::reshape(t.apply1("bias_add", {nn::reshape(x, Shape{B, seq * dim}), param("pos")}), Shape{B, seq, dim});
  for (auto& b : blocks_) x = (*b)(x);
  return nn::reshape((*head_)((*ln_)(x)), Shape{B * seq, vocab});
}

std::string model_names() { return "mlp, cnn, transformer"; }

std::shared_ptr<nn::Module> make_model(const std::string& name, uint64_t seed) {
  if (name == "mlp") return std::make_shared<Mlp>(seed);
  if (name == "cnn") return std::make_shared<Cnn>(seed);
  if (name == "transformer") return std::make_shared<TransformerLm>(64, 32, 64, 4, 2, seed);
  TESSERA_THROW(ValueError, "unknown model '", name, "' (known: ", model_names(), ")");
}

}  // namespace tessera::models
