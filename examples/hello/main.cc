// Converts a tensor to bf16 and cfp8 and prints what was lost.
#include <tessera/tessera.h>

#include <cmath>
#include <iostream>

int main() {
  using namespace tessera;
  Tensor x = Tensor::normal({2, 4}, 0.0, 10.0, /*seed=*/1);
  Tensor b = x.to(DType::bf16);
  Tensor c = x.to(DType::cfp8_e4m3, /*bias=*/6);
  std::cout << x << "\n" << b << "\n" << c << "\n";
  double worst = 0;
  auto xs = x.to_f32_vector(), cs = c.to_f32_vector();
  for (size_t i = 0; i < xs.size(); ++i) worst = std::max(worst, std::fabs(double(xs[i]) - cs[i]) / std::fabs(xs[i]));
  std::cout << "tessera " << version() << ": worst relative cfp8 error " << worst << "\n";
  return worst < 0.07 ? 0 : 1;  // e4m3 keeps 3 mantissa bits: relative error <= 1/16
}
