#include <tessera/runtime/info.h>

#include <tessera/comms/build_info.h>
#include <tessera/core/cfp8.h>
#include <tessera/core/dtype.h>
#include <tessera/kernels/convert.h>
#include <tessera/kernels/cpu.h>

#include <oneapi/tbb/info.h>

#include <sched.h>

#include <cstdio>
#include <sstream>

namespace tessera {

const char* version() { return TESSERA_VERSION; }

namespace {
std::string fmt_g(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}
}  // namespace

std::vector<int> usable_cpus() {
  std::vector<int> out;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof set, &set) != 0) return out;
  for (int c = 0; c < CPU_SETSIZE; ++c)
    if (CPU_ISSET(c, &set)) out.push_back(c);
  return out;
}

std::string cpu_list(const std::vector<int>& cpus) {
  std::string s;
  for (size_t i = 0; i < cpus.size();) {
    size_t j = i;
    while (j + 1 < cpus.size() && cpus[j + 1] == cpus[j] + 1) ++j;
    if (!s.empty()) s += ",";
    s += std::to_string(cpus[i]);
    if (j > i) s += "-" + std::to_string(cpus[j]);
    i = j + 1;
  }
  return s;
}

std::string info_report() {
  using namespace kernels;
  std::ostringstream os;
  const CpuFeatures& f = cpu_features();
  os << "tessera " << version() << "\n\n";
  os << "CPU      " << (f.brand.empty() ? "unknown" : f.brand) << " (" << f.vendor << "), "
     << tbb::info::default_concurrency() << " hardware threads\n";
  const std::vector<int> cpus = usable_cpus();
  os << "CPU set  this process may run on CPU " << (cpus.empty() ? "?" : cpu_list(cpus)) << "\n";
  os << "ISA ladder (lowest first):\n";
  Isa active = active_isa();
  for (Isa isa : kAllIsas) {
    std::string why = isa_unavailable_reason(isa);
    os << "  " << (isa == active ? "* " : "  ") << isa_name(isa);
    for (size_t pad = std::string(isa_name(isa)).size(); pad < 13; ++pad) os << ' ';
    os << (why.empty() ? "available" : why) << (isa == active ? "   <- in use" : "") << "\n";
  }
  os << "  (cap with TESSERA_MAX_ISA=scalar|avx2|avx512|avx512_bf16; current cap "
     << isa_name(isa_cap()) << ", compiled up to " << isa_name(compiled_isa()) << ")\n";
  os << "Kernels  convert: " << convert_impl_name() << "\n\n";

  os << "Dtypes\n  id  name        bytes  range\n";
  for (const auto& d : kDTypeTable) {
    char line[160];
    std::string range;
    switch (d.id) {
      case DType::f32: range = "IEEE binary32"; break;
      case DType::bf16: range = "1-8-7, round to nearest even, max 3.38953e+38"; break;
      case DType::cfp8_e4m3:
      case DType::cfp8_e5m2: {
        Cfp8Layout l = d.id == DType::cfp8_e4m3 ? Cfp8Layout::e4m3 : Cfp8Layout::e5m2;
        Cfp8Format def{l, cfp8_default_bias(l)};
        range = std::string(l == Cfp8Layout::e4m3 ? "1-4-3" : "1-5-2") + ", bias 0..63, default " +
                std::to_string(def.bias) + ": max " + fmt_g(cfp8_max(def)) + ", min subnormal " +
                fmt_g(cfp8_min_subnormal(def)) + ", no Inf/NaN";
        break;
      }
      case DType::i32: range = "two's complement 32-bit"; break;
      case DType::i64: range = "two's complement 64-bit"; break;
    }
    std::snprintf(line, sizeof line, "  %-3d %-11s %-6zu %s\n", static_cast<int>(d.id), d.name,
                  d.size, range.c_str());
    os << line;
  }
  os << "\nCommunication backends\n";
  for (const auto& b : comms::backends()) {
    char line[256];
    std::snprintf(line, sizeof line, "  %-9s %-13s %-22s %s\n", b.name.c_str(),
                  b.compiled ? "library: yes" : "library: no",
                  b.transport ? "transport: ready" : "transport: pending", b.detail.c_str());
    os << line;
  }
  return os.str();
}

}  // namespace tessera
