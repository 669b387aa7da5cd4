// Link accounting: every byte a node sends is charged to each directed mesh link on its
// dimension-ordered route (comms/mesh.h), also when both nodes sit on the same rank.
//
//   LinkStats& s = comm.link_stats();              // this rank's charges
//   std::cout << s.top_links(10);                  // the ten busiest links
//   s.write_csv("links.csv");                      // the per-link table
//   LinkStats all = gather_link_stats(comm);       // rank 0: every rank's charges summed
//
// Emulated time of one collective on the mesh's link specs (the selected preset):
//   T = latency term + max over links l of bytes(l) / bandwidth(l)
// The latency term is the algorithm's sequential steps times the slowest route latency of a
// step (cost_model.h); the bandwidth term assumes perfect pipelining, so the busiest link paces
// the whole collective. A rank only sees its own nodes' sends: its per-collective time is a
// lower bound of the whole mesh's, which gather_link_stats() takes as the max over ranks.
//
// Thread safety: Charges::add may be called from many threads; LinkStats is guarded by its own
// mutex, except that records() returns a reference the caller must not hold across calls.
#pragma once

#include <tessera/comms/mesh.h>
#include <tessera/core/dtype.h>

#include <array>
#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace tessera::comms {

enum class OpKind : uint8_t {
  allreduce, reduce_scatter, allgather, broadcast, sendrecv, barrier, halo, internal
};
inline constexpr int kNumOpKinds = 8;
const char* op_kind_name(OpKind k);

// The charges of one call on this rank.
class Charges {
 public:
  void add(const Mesh& mesh, int src_node, int dst_node, uint64_t bytes);
  // Snapshot (not thread-safe against concurrent add()).
  const std::unordered_map<int, uint64_t>& link_bytes() const { return links_; }
  uint64_t payload_bytes() const { return payload_; }
  uint64_t messages() const { return messages_; }

 private:
  std::mutex mu_;
  std::unordered_map<int, uint64_t> links_;
  uint64_t payload_ = 0, messages_ = 0;
};

struct CollectiveRecord {
  OpKind kind = OpKind::internal;
  std::string algorithm;       // "ring", "mesh2d", "native", ...
  std::string scope;           // "world", "rows", "cols"
  uint64_t count = 0;          // elements per node buffer, as passed
  DType dtype = DType::f32;
  uint64_t payload_bytes = 0;  // sent by this rank's nodes, each message once
  uint64_t link_bytes = 0;     // summed over links: payload x hops
  uint64_t messages = 0;
  int busiest_link = -1;
  uint64_t busiest_bytes = 0;
  double emulated_s = 0;       // see the header comment
  double measured_s = 0;       // wall time of the call on this rank
};

class LinkStats {
 public:
  explicit LinkStats(Mesh mesh);
  LinkStats(const LinkStats& o);
  LinkStats& operator=(const LinkStats& o);

  const Mesh& mesh() const { return mesh_; }
  // Folds one call's charges into the table. latency_s: the algorithm's latency term.
  // Fills in the record's byte counts, busiest link and emulated time, and returns it.
  CollectiveRecord record(CollectiveRecord rec, const Charges& charges, double latency_s);

  uint64_t bytes(int link_id) const;
  uint64_t bytes(int link_id, OpKind k) const;
  uint64_t total_link_bytes() const;
  std::vector<CollectiveRecord> records() const;
  double total_emulated_s() const;
  // Links with the most bytes, busiest first: (link id, bytes).
  std::vector<std::pair<int, uint64_t>> busiest(int n) const;

  // A table of the n busiest links: link, boundary, bytes, busy time on its bandwidth, share.
  std::string top_links(int n) const;
  // One line per collective kind: calls, bytes, emulated and measured time.
  std::string summary() const;
  // Per-link table as CSV; include_idle adds links that carried nothing. IoError on failure.
  void write_csv(const std::string& path, bool include_idle = false) const;

  // Merge another rank's stats (same mesh): bytes add up. Records pair up in call order by what
  // the call was (kind, algorithm, scope, count, dtype): every rank makes the same collective
  // calls, but a send/recv involves only two of them, so a record with no partner among the
  // next 64 after the last paired one is inserted there. Paired records' bytes add and their
  // times take the max.
  void merge(const LinkStats& other);
  std::string serialize() const;
  static LinkStats deserialize(const Mesh& mesh, const std::string& bytes);  // RemoteError if bad
  void clear();

 private:
  using PerKind = std::array<uint64_t, kNumOpKinds>;
  Mesh mesh_;
  mutable std::mutex mu_;
  std::unordered_map<int, PerKind> table_;
  std::vector<CollectiveRecord> records_;
};

}  // namespace tessera::comms
