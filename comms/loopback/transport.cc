#include <tessera/comms/loopback/transport.h>
#include <tessera/core/error.h>

namespace tessera::comms::loopback {

Hub::Hub(int size) : taken_(static_cast<size_t>(size), false) {
  for (int r = 0; r < size; ++r) matchers_.push_back(std::make_shared<Matcher>());
}

std::shared_ptr<Hub> Hub::create(int size) {
  TESSERA_CHECK(size >= 1, "loopback hub: world size must be at least 1, got ", size);
  return std::shared_ptr<Hub>(new Hub(size));
}

std::shared_ptr<Transport> Hub::transport(int rank) {
  TESSERA_CHECK_INDEX(rank >= 0 && rank < size(), "loopback hub: rank ", rank,
                      " is outside the world of ", size(), " ranks");
  std::lock_guard<std::mutex> lock(mu_);
  TESSERA_CHECK(!taken_[rank], "loopback hub: the transport of rank ", rank, " was already taken");
  taken_[rank] = true;
  return std::make_shared<LoopbackTransport>(shared_from_this(), rank);
}

void Hub::rank_gone(int rank, const Failure& to_peers) {
  // Sends from `rank` queued at peers point into its buffers: fail them before they go away.
  for (int r = 0; r < size(); ++r) {
    if (r != rank) matchers_[r]->fail_source(static_cast<uint64_t>(rank), to_peers);
  }
  // Peers' sends into this rank (and this rank's own receives, which see the same message).
  matchers_[rank]->close(to_peers);
}

void Hub::kill(int rank) {
  TESSERA_CHECK_INDEX(rank >= 0 && rank < size(), "loopback hub: rank ", rank, " is outside the world");
  rank_gone(rank, {FailKind::network, "rank " + std::to_string(rank) + " is gone (its process died)"});
}

LoopbackTransport::LoopbackTransport(std::shared_ptr<Hub> hub, int rank)
    : hub_(std::move(hub)), rank_(rank) {}

LoopbackTransport::~LoopbackTransport() {
  std::string who = "rank " + std::to_string(rank_);
  std::call_once(gone_, [&] {
    hub_->rank_gone(rank_, {FailKind::network, who + " is gone (its loopback transport was closed)"});
  });
}

void LoopbackTransport::check_peer(int peer) const {
  TESSERA_CHECK_INDEX(peer >= 0 && peer < size(), "loopback: peer rank ", peer,
                      " is outside the world of ", size(), " ranks");
}

RequestPtr LoopbackTransport::isend(int peer, uint64_t tag, const void* data, size_t bytes) {
  check_peer(peer);
  return hub_->matcher(peer).post_send({static_cast<uint64_t>(rank_), tag}, data, bytes);
}

RequestPtr LoopbackTransport::irecv(int peer, uint64_t tag, void* data, size_t bytes) {
  check_peer(peer);
  return hub_->matcher(rank_).post_recv({static_cast<uint64_t>(peer), tag}, data, bytes);
}

void LoopbackTransport::abort(const std::string& reason) {
  std::string who = "rank " + std::to_string(rank_);
  std::call_once(gone_, [&] {
    hub_->rank_gone(rank_, {FailKind::remote, who + " aborted: " + reason});
  });
}

}  // namespace tessera::comms::loopback
