#include <tessera/comms/fabric.h>
#include <tessera/core/error.h>

namespace tessera::comms {

Fabric::Fabric(const Placement& placement, std::shared_ptr<Transport> transport)
    : placement_(placement), transport_(std::move(transport)), rank_(transport_->rank()) {
  TESSERA_CHECK(transport_->size() == placement_.ranks, "the ", transport_->name(),
                " transport has ", transport_->size(), " ranks but the placement needs ",
                placement_.ranks);
  while ((1 << local_bits_) < placement_.nodes_per_rank()) ++local_bits_;
  uint64_t t = transport_->max_tag();
  max_tag_ = 2 * local_bits_ >= 64 ? 0 : t >> (2 * local_bits_);
  // Local exchanges key on (src node, dst node, tag): keep room for the destination index.
  max_tag_ = std::min<uint64_t>(max_tag_, (uint64_t{1} << 40) - 1);
}

uint64_t Fabric::wire_tag(uint64_t tag, int src_node, int dst_node) const {
  TESSERA_CHECK(tag <= max_tag_, "tag ", tag, " is too large: with ", placement_.nodes_per_rank(),
                " nodes per rank the ", transport_->name(), " transport carries tags up to ",
                max_tag_);
  return (tag << (2 * local_bits_)) |
         (static_cast<uint64_t>(placement_.local_index(src_node)) << local_bits_) |
         static_cast<uint64_t>(placement_.local_index(dst_node));
}

RequestPtr Fabric::isend(int src, int dst, uint64_t tag, const void* data, size_t bytes) {
  if (is_local(dst)) {
    return local_->post_send({static_cast<uint64_t>(src), (tag << 22) | static_cast<uint64_t>(dst)},
                             data, bytes);
  }
  return transport_->isend(placement_.rank_of(dst), wire_tag(tag, src, dst), data, bytes);
}

RequestPtr Fabric::irecv(int dst, int src, uint64_t tag, void* data, size_t bytes, Transport::Consume consume) {
  if (is_local(src)) {
    auto r = local_->post_recv({static_cast<uint64_t>(src), (tag << 22) | static_cast<uint64_t>(dst)}, data, bytes);
    return consume ? consume_on_completion(std::move(r), data, std::move(consume)) : std::move(r);
  }
  if (consume)
    return transport_->irecv_consume(placement_.rank_of(src), wire_tag(tag, src, dst), data, bytes, std::move(consume));
  return transport_->irecv(placement_.rank_of(src), wire_tag(tag, src, dst), data, bytes);
}

}  // namespace tessera::comms
