// The umbrella header: #include <tessera/tessera.h> and link tessera::runtime.
//
//   tessera::Tensor x = tessera::Tensor::normal({2, 3}, 0, 1, /*seed=*/7);
//   std::cout << x.to(tessera::DType::bf16) << "\n" << tessera::info_report();
#pragma once

#include <tessera/comms/build_info.h>
#include <tessera/core/bf16.h>
#include <tessera/core/cfp8.h>
#include <tessera/core/dtype.h>
#include <tessera/core/error.h>
#include <tessera/core/shape.h>
#include <tessera/core/tensor.h>
#include <tessera/core/tensor_proto.h>
#include <tessera/kernels/convert.h>
#include <tessera/kernels/cpu.h>
#include <tessera/runtime/info.h>
