#include <tessera/kernels/cpu.h>

#include <tessera/core/error.h>

#include <cpuid.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>

namespace tessera::kernels {
namespace {

uint64_t xgetbv0() {
  uint32_t lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (static_cast<uint64_t>(hi) << 32) | lo;
}

CpuFeatures detect() {
  CpuFeatures f;
  unsigned a, b, c, d;
  if (!__get_cpuid(0, &a, &b, &c, &d)) return f;
  unsigned max_leaf = a;
  char vendor[13] = {};
  std::memcpy(vendor, &b, 4);
  std::memcpy(vendor + 4, &d, 4);
  std::memcpy(vendor + 8, &c, 4);
  f.vendor = vendor;

  __get_cpuid(1, &a, &b, &c, &d);
  bool osxsave = c & (1u << 27);
  f.fma = c & (1u << 12);
  f.f16c = c & (1u << 29);
  if (osxsave) {
    uint64_t xcr0 = xgetbv0();
    f.os_avx = (xcr0 & 0x6) == 0x6;
    f.os_avx512 = f.os_avx && (xcr0 & 0xe0) == 0xe0;
  }
  if (max_leaf >= 7) {
    __cpuid_count(7, 0, a, b, c, d);
    unsigned subleaves = a;
    f.avx2 = b & (1u << 5);
    f.avx512f = b & (1u << 16);
    f.avx512dq = b & (1u << 17);
    f.avx512bw = b & (1u << 30);
    f.avx512vl = b & (1u << 31);
    f.avx512_vnni = c & (1u << 11);
    f.avx512_vbmi = c & (1u << 1);
    if (subleaves >= 1) {
      __cpuid_count(7, 1, a, b, c, d);
      f.avx512_bf16 = a & (1u << 5);
    }
  }
  unsigned ext = __get_cpuid_max(0x80000000u, nullptr);
  if (ext >= 0x80000004u) {
    char brand[49] = {};
    for (unsigned i = 0; i < 3; ++i) {
      __get_cpuid(0x80000002u + i, &a, &b, &c, &d);
      std::memcpy(brand + 16 * i, &a, 4);
      std::memcpy(brand + 16 * i + 4, &b, 4);
      std::memcpy(brand + 16 * i + 8, &c, 4);
      std::memcpy(brand + 16 * i + 12, &d, 4);
    }
    f.brand = brand;
    while (!f.brand.empty() && f.brand.back() == ' ') f.brand.pop_back();
  }
  return f;
}

Isa cap_from_env() {
  const char* v = std::getenv("TESSERA_MAX_ISA");
  if (!v || !*v) return Isa::avx512_bf16;
  return isa_from_name(v);
}

std::atomic<int>& cap_storage() {
  static std::atomic<int> cap{static_cast<int>(cap_from_env())};
  return cap;
}

}  // namespace

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::scalar: return "scalar";
    case Isa::avx2: return "avx2";
    case Isa::avx512: return "avx512";
    case Isa::avx512_bf16: return "avx512_bf16";
  }
  return "?";
}

Isa isa_from_name(std::string_view name) {
  for (Isa isa : kAllIsas) {
    if (name == isa_name(isa)) return isa;
  }
  TESSERA_THROW(ValueError, "unknown ISA '", name,
                "' (TESSERA_MAX_ISA must be one of: scalar, avx2, avx512, avx512_bf16)");
}

const CpuFeatures& cpu_features() {
  static const CpuFeatures f = detect();
  return f;
}

Isa cpu_isa() {
  const auto& f = cpu_features();
  bool avx2 = f.os_avx && f.avx2 && f.fma && f.f16c;
  bool avx512 = avx2 && f.os_avx512 && f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq;
  if (avx512 && f.avx512_bf16) return Isa::avx512_bf16;
  if (avx512) return Isa::avx512;
  if (avx2) return Isa::avx2;
  return Isa::scalar;
}

Isa compiled_isa() {
  // The CMake cap (TESSERA_MAX_ISA) decides which rungs' sources are compiled.
  return static_cast<Isa>(TESSERA_COMPILED_ISA);
}

Isa isa_cap() { return static_cast<Isa>(cap_storage().load()); }
void set_isa_cap(Isa cap) { cap_storage().store(static_cast<int>(cap)); }

Isa active_isa() {
  int best = std::min({static_cast<int>(cpu_isa()), static_cast<int>(compiled_isa()),
                       static_cast<int>(isa_cap())});
  return static_cast<Isa>(best);
}

std::string isa_unavailable_reason(Isa isa) {
  if (isa > cpu_isa()) return std::string("this CPU lacks ") + isa_name(isa);
  if (isa > compiled_isa()) {
    return std::string("not compiled in (CMake TESSERA_MAX_ISA=") + isa_name(compiled_isa()) + ")";
  }
  if (isa > isa_cap()) return std::string("capped by TESSERA_MAX_ISA=") + isa_name(isa_cap());
  return "";
}

}  // namespace tessera::kernels
