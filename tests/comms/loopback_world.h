// Runs a world of loopback ranks as threads: fn(comm) on every rank, exceptions collected.
#pragma once

#include <tessera/comms/communicator.h>
#include <tessera/comms/loopback/transport.h>

#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace tessera::comms::testing {

// Returns one entry per rank: "" on success, else the exception's message.
inline std::vector<std::string> run_loopback(const Mesh& mesh, int ranks,
                                             const std::function<void(MeshComm&)>& fn,
                                             CommOptions options = {}) {
  auto hub = loopback::Hub::create(ranks);
  std::vector<std::string> errors(static_cast<size_t>(ranks));
  std::vector<std::thread> threads;
  for (int r = 0; r < ranks; ++r) {
    threads.emplace_back([&, r] {
      try {
        MeshComm comm(mesh, hub->transport(r), options);
        fn(comm);
      } catch (const std::exception& e) {
        errors[r] = e.what();
        if (errors[r].empty()) errors[r] = "exception without message";
      }
    });
  }
  for (auto& t : threads) t.join();
  return errors;
}

}  // namespace tessera::comms::testing
