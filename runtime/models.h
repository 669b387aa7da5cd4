// Built-in models. Input layouts: images NHWC f32 [B, 28, 28, 1].
//   mlp  784-512-512-10 with ReLU
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

// By name: "mlp". ValueError lists the known names.
std::shared_ptr<nn::Module> make_model(const std::string& name, uint64_t seed);
std::string model_names();

}  // namespace tessera::models
