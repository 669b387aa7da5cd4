// `tessera launch -n N -- <tessera command and options>`: starts N processes of this tessera
// binary on this machine for the grpc transport (TESSERA_RANK, TESSERA_WORLD_SIZE and
// TESSERA_COORDINATOR=127.0.0.1:<free port> in each one's environment), waits for all, and if
// one fails stops the others and exits non-zero naming the rank. --bind core (the default)
// gives rank r the r-th of N equal blocks of the launcher's CPUs when N <= CPUs; --bind none,
// or more ranks than CPUs, leaves them unbound.
#pragma once

#include <string>
#include <vector>

namespace tessera {

int launch_command(const std::vector<std::string>& args);

}  // namespace tessera
