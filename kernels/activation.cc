#include <tessera/kernels/activation.h>

#include <tessera/kernels/convert.h>
#include <tessera/kernels/dispatch.h>
#include <tessera/kernels/parallel_chunks.h>

namespace tessera::kernels {

#if !defined(TESSERA_HAVE_AVX2)
const ActivationFns* activation_fns_avx2() { return nullptr; }
#endif
#if !defined(TESSERA_HAVE_AVX512)
const ActivationFns* activation_fns_avx512() { return nullptr; }
#endif

namespace {
const Impl<ActivationFns>& pick() {
  static const Impl<ActivationFns> kList[] = {
      {"avx512", Isa::avx512, activation_fns_avx512()},
      {"avx2", Isa::avx2, activation_fns_avx2()},
      {"scalar", Isa::scalar, activation_fns_scalar()},
  };
  return select("activation", kList);
}

// GELU costs a few dozen flops per element: smaller chunks still pay for their task.
constexpr size_t kTranscendentalChunk = kChunkElems / 4;

template <typename F>
void unary(F f, const float* x, float* y, size_t n, size_t chunk) {
  for_each_chunk(n, chunk, [&](size_t i, size_t j) { f(x + i, y + i, j - i); });
}
template <typename F>
void binary(F f, const float* x, const float* dy, float* dx, size_t n, size_t chunk) {
  for_each_chunk(n, chunk, [&](size_t i, size_t j) { f(x + i, dy + i, dx + i, j - i); });
}
// Widen each chunk of x into y, then apply f in place.
template <typename F>
void unary_bf16(F f, const uint16_t* x, float* y, size_t n, size_t chunk) {
  auto widen = convert_fns().bf16_to_f32;
  for_each_chunk(n, chunk, [&](size_t i, size_t j) {
    widen(x + i, y + i, j - i);
    f(y + i, y + i, j - i);
  });
}
}  // namespace

const ActivationFns& activation_fns() { return *pick().fns; }
const char* activation_impl_name() { return pick().name; }

void relu(const float* x, float* y, size_t n) { unary(activation_fns().relu, x, y, n, kChunkElems); }
void relu_backward(const float* x, const float* dy, float* dx, size_t n) {
  binary(activation_fns().relu_backward, x, dy, dx, n, kChunkElems);
}
void gelu(const float* x, float* y, size_t n) {
  unary(activation_fns().gelu, x, y, n, kTranscendentalChunk);
}
void gelu_backward(const float* x, const float* dy, float* dx, size_t n) {
  binary(activation_fns().gelu_backward, x, dy, dx, n, kTranscendentalChunk);
}
void erf_elementwise(const float* x, float* y, size_t n) {
  unary(activation_fns().erf, x, y, n, kTranscendentalChunk);
}

void relu_bf16(const uint16_t* x, float* y, size_t n) {
  unary_bf16(activation_fns().relu, x, y, n, kChunkElems);
}
void gelu_bf16(const uint16_t* x, float* y, size_t n) {
  unary_bf16(activation_fns().gelu, x, y, n, kTranscendentalChunk);
}

}  // namespace tessera::kernels
