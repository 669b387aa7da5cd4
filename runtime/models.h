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

// By name: "mlp", "cnn". ValueError lists the known names.
std::shared_ptr<nn::Module> make_model(const std::string& name, uint64_t seed);
std::string model_names();

}  // namespace tessera::models
