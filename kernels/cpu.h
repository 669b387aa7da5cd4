// CPU feature detection and the ISA ladder: scalar < avx2 < avx512 < avx512_bf16.
//
//   Isa isa = kernels::active_isa();        // what dispatch will use right now
//   kernels::ScopedIsaCap cap(Isa::avx2);   // tests: force a lower rung in this scope
//
// active_isa() = min(what this CPU supports, what was compiled in, the cap). The cap starts as
// the environment variable TESSERA_MAX_ISA (scalar|avx2|avx512|avx512_bf16) and can be changed
// at run time; it is process-wide and atomic, so change it only while no kernel is running.
#pragma once

#include <string>
#include <string_view>

namespace tessera::kernels {

enum class Isa : int { scalar = 0, avx2 = 1, avx512 = 2, avx512_bf16 = 3 };
inline constexpr Isa kAllIsas[] = {Isa::scalar, Isa::avx2, Isa::avx512, Isa::avx512_bf16};

const char* isa_name(Isa isa);
Isa isa_from_name(std::string_view name);  // ValueError names the bad value and the choices

struct CpuFeatures {
  std::string vendor;
  std::string brand;
  bool avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false;
  bool avx512_bf16 = false, avx512_vnni = false, avx512_vbmi = false;
  bool os_avx = false, os_avx512 = false;  // the OS saves the registers (XCR0)
};

const CpuFeatures& cpu_features();
Isa cpu_isa();       // best rung this CPU (and OS) supports
Isa compiled_isa();  // best rung compiled into this build (CMake TESSERA_MAX_ISA)
Isa isa_cap();       // current run-time cap
void set_isa_cap(Isa cap);
Isa active_isa();

// Why `isa` cannot be used now, or "" if it can.
std::string isa_unavailable_reason(Isa isa);

class ScopedIsaCap {
 public:
  explicit ScopedIsaCap(Isa cap) : saved_(isa_cap()) { set_isa_cap(cap); }
  ~ScopedIsaCap() { set_isa_cap(saved_); }
  ScopedIsaCap(const ScopedIsaCap&) = delete;
  ScopedIsaCap& operator=(const ScopedIsaCap&) = delete;

 private:
  Isa saved_;
};

}  // namespace tessera::kernels
