// Ordered implementation lists (oneDNN style). Each op keeps a list, best first, reference
// last. An entry applies when its ISA rung is available (see cpu.h) and, optionally, when its
// own predicate accepts the problem; otherwise it says why not. With TESSERA_VERBOSE=1 (or
// TESSERA_LOG_LEVEL=debug) every selection that differs from the previous one for that op is
// logged with the reasons each better entry was skipped.
//
//   static const Impl<ConvertFns> kList[] = {{"avx512", Isa::avx512, &fns512}, ...,
//                                            {"scalar", Isa::scalar, &fns_ref}};
//   const auto& impl = select("convert", kList);
#pragma once

#include <tessera/core/error.h>
#include <tessera/core/log.h>
#include <tessera/kernels/cpu.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>

namespace tessera::kernels {

template <typename T>
struct Impl {
  const char* name;
  Isa isa;
  const T* fns;  // nullptr when the rung was not compiled in
};

namespace detail {
inline std::string skip_reason(Isa isa, bool compiled) {
  if (!compiled) return "not compiled in";
  return isa_unavailable_reason(isa);
}
}  // namespace detail

// Picks the first usable entry. `last_logged` remembers the previous choice for logging.
// The choice depends only on the list and the run-time ISA cap (the CPU and the build are
// fixed), so it is remembered: callers such as per-row conversions may select thousands of
// times per operation.
template <typename T, size_t N>
const Impl<T>& select(const char* op, const Impl<T> (&list)[N]) {
  static_assert(N < 16, "select: at most 15 entries");
  static std::atomic<uint64_t> cached{0};  // list address << 8 | cap << 4 | index; 0: none
  const uint64_t key = static_cast<uint64_t>(reinterpret_cast<uintptr_t>(&list)) << 8 |
                       static_cast<uint64_t>(isa_cap()) << 4;
  const uint64_t hit = cached.load(std::memory_order_relaxed);
  if (hit != 0 && (hit & ~uint64_t{15}) == key) return list[hit & 15];
  static std::atomic<const Impl<T>*> last_logged{nullptr};
  std::string skipped;
  for (size_t i = 0; i < N; ++i) {
    const auto& impl = list[i];
    std::string why = detail::skip_reason(impl.isa, impl.fns != nullptr);
    if (why.empty()) {
      if (last_logged.exchange(&impl) != &impl) {
        auto logger = log::get("kernels");
        if (logger->should_log(spdlog::level::debug)) {
          logger->debug("{}: using {}{}", op, impl.name, skipped.empty() ? "" : " (skipped" + skipped + ")");
        }
      }
      cached.store(key | i, std::memory_order_relaxed);
      return impl;
    }
    skipped += std::string(" ") + impl.name + ": " + why + ";";
  }
  TESSERA_THROW(InternalError, op, ": no implementation applies:", skipped);
}

}  // namespace tessera::kernels
