// loopback: ranks are threads of one process; messages are copied through memory. The test
// default and the oracle for the other transports.
//
//   auto hub = loopback::Hub::create(4);                 // a world of 4 ranks
//   std::vector<std::thread> ranks;
//   for (int r = 0; r < 4; ++r)
//     ranks.emplace_back([&, r] { auto t = hub->transport(r); ... });
//
// A rank "dies" when its transport is destroyed: peers' pending and future operations with it
// fail with NetworkError naming the rank. abort() fails this rank's operations with CommError
// and tells every peer (RemoteError naming this rank and the reason).
#pragma once

#include <tessera/comms/matcher.h>
#include <tessera/comms/transport.h>

#include <memory>
#include <mutex>
#include <vector>

namespace tessera::comms::loopback {

class Hub : public std::enable_shared_from_this<Hub> {
 public:
  static std::shared_ptr<Hub> create(int size);
  int size() const { return static_cast<int>(matchers_.size()); }
  // The transport of `rank`; each rank's transport may be taken once.
  std::shared_ptr<Transport> transport(int rank);

  // Simulates the death of `rank`'s process (tests): peers see NetworkError as if its transport
  // had been destroyed, and so do the rank's own pending operations.
  void kill(int rank);

  // Called by a rank's transport when it goes away or aborts.
  void rank_gone(int rank, const Failure& to_peers);
  Matcher& matcher(int rank) { return *matchers_[rank]; }

 private:
  explicit Hub(int size);
  std::mutex mu_;
  std::vector<std::shared_ptr<Matcher>> matchers_;
  std::vector<bool> taken_;
};

class LoopbackTransport : public Transport {
 public:
  LoopbackTransport(std::shared_ptr<Hub> hub, int rank);
  ~LoopbackTransport() override;

  int rank() const override { return rank_; }
  int size() const override { return hub_->size(); }
  const char* name() const override { return "loopback"; }
  uint64_t max_tag() const override { return ~uint64_t{0}; }
  RequestPtr isend(int peer, uint64_t tag, const void* data, size_t bytes) override;
  RequestPtr irecv(int peer, uint64_t tag, void* data, size_t bytes) override;
  void abort(const std::string& reason) override;
  double alpha() const override { return 5e-6; }  // a condition-variable wake-up
  double beta() const override { return 8e9; }    // one memcpy

 private:
  void check_peer(int peer) const;
  std::shared_ptr<Hub> hub_;
  int rank_;
  std::once_flag gone_;
};

}  // namespace tessera::comms::loopback
