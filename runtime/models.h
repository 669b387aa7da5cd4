// Built-in models. Input layouts: images NHWC f32 [B, 28, 28, 1].
//   mlp  784-512-512-10 with ReLU
//   cnn  conv3x3 1->32, ReLU, maxpool 2, conv3x3 32->64, ReLU, maxpool 2, linear 3136->128, ReLU,
//        linear 128->10 (about 25 MFLOP per image for forward + backward)
#pragma once

#include <tessera/core/nn.h>

#include <memory>
#include <string>

namespace tessera::models {

class Mlp : public nn::Module {
 public:
  explicit Mlp(uint64_t seed, int64_t in = 784, int64_t hidden = 512, int64_t classes = 10);
  nn::Var forward(nn::Var x) override;

 private:
  std::shared_ptr<nn::Linear> fc1_, fc2_, fc3_;
};

class Cnn : public nn::Module {
 public:
  explicit Cnn(uint64_t seed);
  nn::Var forward(nn::Var x) override;

 private:
  std::shared_ptr<nn::Conv2d> conv1_, conv2_;
  std::shared_ptr<nn::MaxPool2d> pool_;
  std::shared_ptr<nn::Linear> fc1_, fc2_;
};

// A small causal transformer language model: token + learned position embeddings, `layers`
// pre-norm blocks, final layer norm, linear head. Input ids [B, seq] i32, output logits
// [B * seq, vocab].
class TransformerLm : public nn::Module {
 public:
  TransformerLm(int64_t vocab, int64_t seq, int64_t dim, int64_t heads, int64_t layers, uint64_t seed);
  nn::Var forward(nn::Var ids) override;
  int64_t vocab, seq, dim;

 private:
  std::shared_ptr<nn::Embedding> tok_;
  std::vector<std::shared_ptr<nn::TransformerBlock>> blocks_;
  std::shared_ptr<nn::LayerNorm> ln_;
  std::shared_ptr<nn::Linear> head_;
};

// By name: "mlp", "cnn", "transformer" (vocab 64, seq 32, dim 64, 4 heads, 2 layers). ValueError lists the known names.
std::shared_ptr<nn::Module> make_model(const std::string& name, uint64_t seed);
std::string model_names();

}  // namespace tessera::models
