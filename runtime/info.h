// `tessera info`: version, the CPU's ISA ladder and the rung in use, the dtype table, and
// which communication backends this build has.
#pragma once

#include <string>
#include <vector>

namespace tessera {

const char* version();
std::string info_report();

// The CPUs this process may run on (its affinity mask), ascending; empty if it cannot be read.
std::vector<int> usable_cpus();
// "0-3,6" for {0, 1, 2, 3, 6}.
std::string cpu_list(const std::vector<int>& cpus);

}  // namespace tessera
