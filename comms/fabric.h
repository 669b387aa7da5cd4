// The fabric: messages between mesh nodes. Nodes hosted by this rank exchange through memory
// (a Matcher); nodes on other ranks through the transport. Every message is charged to the
// links of its route by the caller (comms/communicator.h), not here.
//
// Tags. A node-level message is identified by (source node, destination node, tag). The
// transport sees tag' = (tag << 2L) | (source's index in its block << L) | destination's index
// in its block, with L = ceil(log2(nodes per rank)), so the source/destination pair stays
// distinct while the tag fits the transport's limit (MPI_TAG_UB is only 2^31 - 1 with OpenMPI).
// Tags used by collectives are internal: (user tag << 4) | sub-tag (communicator.h).
#pragma once

#include <tessera/comms/matcher.h>
#include <tessera/comms/mesh.h>
#include <tessera/comms/placement.h>
#include <tessera/comms/transport.h>

#include <memory>

namespace tessera::comms {

class Fabric {
 public:
  Fabric(const Placement& placement, std::shared_ptr<Transport> transport);

  // Largest tag a node-level message can carry with this placement and transport.
  uint64_t max_tag() const { return max_tag_; }
  bool is_local(int node) const { return placement_.rank_of(node) == rank_; }
  int rank_of(int node) const { return placement_.rank_of(node); }

  RequestPtr isend(int src_node, int dst_node, uint64_t tag, const void* data, size_t bytes);
  // With `consume`: Transport::irecv_consume (the bytes handed over where they lie).
  RequestPtr irecv(int dst_node, int src_node, uint64_t tag, void* data, size_t bytes,
                   Transport::Consume consume = nullptr);

  // Fails all pending exchanges between this rank's nodes (after an error).
  void close(const Failure& f) { local_->close(f); }

 private:
  uint64_t wire_tag(uint64_t tag, int src_node, int dst_node) const;

  Placement placement_;
  std::shared_ptr<Transport> transport_;
  int rank_;
  int local_bits_ = 0;
  uint64_t max_tag_ = 0;
  std::shared_ptr<Matcher> local_ = std::make_shared<Matcher>();
};

}  // namespace tessera::comms
