// Ring reduce-scatter / all-gather and chain broadcast: the pipelined engines every algorithm
// is built from (mesh2d runs them along rows and columns).
#include <tessera/comms/collectives_impl.h>

#include <algorithm>
#include <cstring>
#include <memory>

namespace tessera::comms::detail {

std::vector<Chunk> split_even(size_t off, size_t count, int parts) {
  std::vector<Chunk> out(static_cast<size_t>(parts));
  size_t base = count / parts, extra = count % parts;
  for (int j = 0; j < parts; ++j) {
    size_t len = base + (static_cast<size_t>(j) < extra ? 1 : 0);
    if (len) out[j].push_back({off, len});
    off += len;
  }
  return out;
}

namespace {

struct Segment {
  size_t off;      // elements, in the user buffer
  size_t len;      // elements
  size_t staged;   // elements, offset in the staging buffer
};

std::vector<Segment> segments(const Chunk& c, size_t seg_elems) {
  std::vector<Segment> out;
  size_t staged = 0;
  for (const Range& r : c) {
    for (size_t o = 0; o < r.len; o += seg_elems) {
      size_t len = std::min(seg_elems, r.len - o);
      out.push_back({r.off + o, len, staged});
      staged += len;
    }
  }
  return out;
}

inline char* at(void* p, size_t elems, size_t esize) { return static_cast<char*>(p) + elems * esize; }
inline const char* at(const void* p, size_t elems, size_t esize) {
  return static_cast<const char*>(p) + elems * esize;
}

void copy_chunk(const Chunk& c, const void* src, void* dst, size_t esize) {
  if (src == dst) return;
  for (const Range& r : c) std::memcpy(at(dst, r.off, esize), at(src, r.off, esize), r.len * esize);
}

// Scratch for incoming segments, reused across calls on the same thread (no zero fill, no
// page faults after the first call).
char* scratch(size_t bytes) {
  thread_local std::unique_ptr<char[]> buf;
  thread_local size_t cap = 0;
  if (bytes > cap) {
    buf.reset(new char[bytes]);
    cap = bytes;
  }
  return buf.get();
}

}  // namespace

void ring_reduce_scatter(NodeCtx& n, const Ring& ring, const std::vector<Chunk>& chunks,
                         const ElemType& t, ReduceOp op, const void* in, void* acc,
                         size_t seg_elems) {
  const int m = ring.size(), q = ring.pos;
  const size_t es = t.size;
  if (m == 1) {
    copy_chunk(chunks[0], in, acc, es);
    return;
  }
  auto chunk_at = [&](int s) -> const Chunk& { return chunks[((q - s) % m + m) % m]; };
  // Step s sends chunk q-s-1 and receives chunk q-s-2; the last receive (s = m-2) is chunk q.
  // The reduced segment of step s is what step s+1 sends, so it goes out at once.
  std::vector<NodeCtx::Pending> sends;
  for (const Segment& g : segments(chunk_at(1), seg_elems)) {
    sends.push_back(n.send(ring.next(), 0, at(in, g.off, es), g.len * es));
  }
  // Every incoming segment in arrival order; a window of kSlots receives is kept posted.
  struct Item {
    int step;
    Segment seg;
  };
  std::vector<Item> items;
  for (int s = 0; s <= m - 2; ++s)
    for (const Segment& g : segments(chunk_at(s + 2), seg_elems)) items.push_back({s, g});
  constexpr size_t kSlots = 4;
  size_t slot_elems = 0;  // the largest incoming segment, not seg_elems (which may be huge)
  for (const Item& it : items) slot_elems = std::max(slot_elems, it.seg.len);
  const size_t slot_bytes = slot_elems * es;
  char* slots = scratch(kSlots * slot_bytes);
  std::vector<NodeCtx::Pending> recvs(items.size());
  // Each segment is reduced as its receive completes, reading the incoming bytes where they
  // lie (in its slot, or in the sender's memory where the transport allows: no copy).
  auto post = [&](size_t j) {
    if (j < items.size()) {
      const Segment g = items[j].seg;
      recvs[j] = n.recv(ring.prev(), 0, slots + (j % kSlots) * slot_bytes, g.len * es, [&, g](const void* b) {
        reduce(op, t, at(in, g.off, es), b, at(acc, g.off, es), g.len);
      });
    }
  };
  for (size_t j = 0; j < kSlots; ++j) post(j);
  for (size_t j = 0; j < items.size(); ++j) {
    const Segment& g = items[j].seg;
    n.wait(recvs[j]);  // reduced into acc
    void* dst = at(acc, g.off, es);
    post(j + kSlots);
    if (items[j].step < m - 2) sends.push_back(n.send(ring.next(), 0, dst, g.len * es));
  }
  n.wait_all(sends);
}

void ring_allgather(NodeCtx& n, const Ring& ring, const std::vector<Chunk>& chunks,
                    const ElemType& t, void* buf, size_t seg_elems) {
  const int m = ring.size(), q = ring.pos;
  const size_t es = t.size;
  if (m == 1) return;
  auto chunk_at = [&](int s) -> const Chunk& { return chunks[((q - s) % m + m) % m]; };
  // Step s sends chunk q-s and receives chunk q-s-1, which step s+1 forwards.
  std::vector<NodeCtx::Pending> sends;
  for (const Segment& g : segments(chunk_at(0), seg_elems)) {
    sends.push_back(n.send(ring.next(), 0, at(buf, g.off, es), g.len * es));
  }
  std::vector<std::vector<NodeCtx::Pending>> recvs(static_cast<size_t>(m - 1));
  std::vector<std::vector<Segment>> segs(static_cast<size_t>(m - 1));
  for (int s = 0; s <= m - 2; ++s) {
    segs[s] = segments(chunk_at(s + 1), seg_elems);
    for (const Segment& g : segs[s]) {
      recvs[s].push_back(n.recv(ring.prev(), 0, at(buf, g.off, es), g.len * es));
    }
  }
  for (int s = 0; s <= m - 2; ++s) {
    for (size_t k = 0; k < segs[s].size(); ++k) {
      n.wait(recvs[s][k]);
      if (s < m - 2) {
        const Segment& g = segs[s][k];
        sends.push_back(n.send(ring.next(), 0, at(buf, g.off, es), g.len * es));
      }
    }
  }
  n.wait_all(sends);
}

void chain_broadcast(NodeCtx& n, int pred, const std::vector<int>& succs, void* buf, size_t bytes,
                     size_t seg_bytes, int subtag) {
  seg_bytes = std::max<size_t>(seg_bytes, 1);
  std::vector<NodeCtx::Pending> recvs, sends;
  if (pred >= 0) {
    for (size_t o = 0; o < bytes; o += seg_bytes) {
      recvs.push_back(n.recv(pred, subtag, static_cast<char*>(buf) + o, std::min(seg_bytes, bytes - o)));
    }
    if (bytes == 0) recvs.push_back(n.recv(pred, subtag, buf, 0));
  }
  size_t k = 0;
  auto forward = [&](size_t o, size_t len) {
    for (int s : succs) sends.push_back(n.send(s, subtag, static_cast<char*>(buf) + o, len));
  };
  if (bytes == 0) {
    if (pred >= 0) n.wait(recvs[0]);
    forward(0, 0);
  }
  for (size_t o = 0; o < bytes; o += seg_bytes, ++k) {
    if (pred >= 0) n.wait(recvs[k]);
    forward(o, std::min(seg_bytes, bytes - o));
  }
  n.wait_all(sends);
}

}  // namespace tessera::comms::detail
