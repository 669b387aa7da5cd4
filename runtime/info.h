// `tessera info`: version, the CPU's ISA ladder and the rung in use, the dtype table, and
// which communication backends this build has.
#pragma once

#include <string>

namespace tessera {

const char* version();
std::string info_report();

}  // namespace tessera
