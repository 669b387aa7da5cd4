// What communication backends this build of tessera was compiled with.
//
//   for (const auto& b : comms::backends()) std::cout << b.name << ": " << b.detail << "\n";
#pragma once

#include <string>
#include <vector>

namespace tessera::comms {

struct BackendInfo {
  std::string name;      // "loopback", "mpi", "grpc"
  bool compiled = false;       // the backend's library was found and linked
  bool transport = false;      // a Transport implementation exists for it
  std::string detail;          // library version, or why it is absent
};

std::vector<BackendInfo> backends();

}  // namespace tessera::comms
