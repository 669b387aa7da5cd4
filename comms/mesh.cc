#include <tessera/comms/mesh.h>
#include <tessera/proto/mesh.pb.h>

#include <algorithm>
#include <set>
#include <cmath>
#include <cstdio>
#include <limits>
#include <sstream>

namespace tessera::comms {

std::string to_string(Coord c) {
  return "(" + std::to_string(c.row) + "," + std::to_string(c.col) + ")";
}

double NodeSpec::peak_flops(DType t) const {
  switch (t) {
    case DType::f32: return peak_f32;
    case DType::bf16: return peak_bf16;
    case DType::cfp8_e4m3:
    case DType::cfp8_e5m2: return peak_cfp8;
    default: return 0;
  }
}

const char* boundary_name(Boundary b) {
  switch (b) {
    case Boundary::chip_internal: return "node";
    case Boundary::chip: return "chip";
    case Boundary::tile: return "tile";
  }
  return "?";
}

const char* direction_name(Direction d) {
  static const char* names[] = {"E", "W", "S", "N"};
  return names[static_cast<int>(d)];
}

Mesh::Mesh() : node_(dojo_node_spec()), link_(dojo_node_link()), chip_link_(link_), tile_link_(link_) {
  disabled_mask_in_chip_.assign(1, 0);
}

Mesh Mesh::grid(int rows, int cols) {
  std::string name = "cpu:" + std::to_string(rows) + "x" + std::to_string(cols);
  TESSERA_CHECK(rows >= 1 && cols >= 1, "mesh '", name, "': rows and cols must be at least 1");
  return MeshBuilder()
      .name(name)
      .shape(rows, cols)
      .chip(rows, cols)
      .tile(1, 1)
      .node(dojo_node_spec())
      .links(dojo_node_link(), dojo_node_link(), dojo_node_link())
      .build();
}

namespace {

const char* kShapeRule =
    "a mesh is RxC (rows x cols, e.g. 2x2), cpu:RxC, or a preset name (node, d1, tile, exapod), "
    "with R and C positive decimal integers";

}  // namespace

Mesh Mesh::parse(std::string_view spec) {
  std::string s(spec);
  TESSERA_CHECK(!spec.empty(), "mesh '': empty mesh string; ", kShapeRule);
  for (const auto& p : preset_names()) {
    if (spec == p) return preset(spec);
  }
  std::string_view shape = spec;
  if (shape.substr(0, 4) == "cpu:") shape.remove_prefix(4);
  auto x = shape.find('x');
  TESSERA_CHECK(x != std::string_view::npos && shape.find('x', x + 1) == std::string_view::npos,
                "mesh '", s, "': not a preset name and not of the form RxC; ", kShapeRule);
  auto side = [&](std::string_view t, const char* what) -> int {
    TESSERA_CHECK(!t.empty(), "mesh '", s, "': the number of ", what, " is missing; ", kShapeRule);
    TESSERA_CHECK(t.find_first_not_of("0123456789") == std::string_view::npos, "mesh '", s, "': ",
                  what, " '", t, "' is not a positive integer; ", kShapeRule);
    std::string_view digits = t.substr(std::min(t.find_first_not_of('0'), t.size()));  // no leading zeros
    int64_t v = 0;
    for (char ch : digits.substr(0, 10)) v = v * 10 + (ch - '0');
    TESSERA_CHECK(digits.size() <= 9 && v <= kMaxSide, "mesh '", s, "': ", t, " ", what,
                  " is absurd: at most ", kMaxSide, " nodes per side");
    TESSERA_CHECK(v >= 1, "mesh '", s, "': ", what, " must be at least 1 (got ", v, ")");
    return static_cast<int>(v);
  };
  int rows = side(shape.substr(0, x), "rows"), cols = side(shape.substr(x + 1), "cols");
  TESSERA_CHECK(int64_t{rows} * cols <= kMaxNodes, "mesh '", s, "': ", int64_t{rows} * cols,
                " nodes is absurd: the limit is ", kMaxNodes, " (the exapod preset has 1080000)");
  return grid(rows, cols);
}

Mesh MeshBuilder::build() {
  if (m.chip_rows_ == 0) m.chip_rows_ = m.rows_;
  if (m.chip_cols_ == 0) m.chip_cols_ = m.cols_;
  if (m.tile_chip_rows_ == 0) m.tile_chip_rows_ = std::max(1, m.rows_ / std::max(1, m.chip_rows_));
  if (m.tile_chip_cols_ == 0) m.tile_chip_cols_ = std::max(1, m.cols_ / std::max(1, m.chip_cols_));
  m.validate();
  m.disabled_mask_in_chip_.assign(static_cast<size_t>(m.chip_rows_) * m.chip_cols_, 0);
  for (Coord c : m.disabled_in_chip_) m.disabled_mask_in_chip_[c.row * m.chip_cols_ + c.col] = 1;
  return m;
}

void Mesh::validate() const {
  const std::string& n = name_;
  TESSERA_CHECK(rows_ >= 1 && cols_ >= 1 && rows_ <= kMaxSide && cols_ <= kMaxSide,
                "mesh '", n, "': ", rows_, "x", cols_, " is out of range 1..", kMaxSide, " per side");
  TESSERA_CHECK(int64_t{rows_} * cols_ <= kMaxNodes, "mesh '", n, "': ", int64_t{rows_} * cols_,
                " nodes is more than the limit of ", kMaxNodes);
  TESSERA_CHECK(chip_rows_ >= 1 && chip_cols_ >= 1 && rows_ % chip_rows_ == 0 &&
                    cols_ % chip_cols_ == 0,
                "mesh '", n, "': chips of ", chip_rows_, "x", chip_cols_, " nodes do not tile ",
                rows_, "x", cols_);
  int64_t tr = int64_t{chip_rows_} * tile_chip_rows_, tc = int64_t{chip_cols_} * tile_chip_cols_;
  TESSERA_CHECK(tile_chip_rows_ >= 1 && tile_chip_cols_ >= 1 && rows_ % tr == 0 && cols_ % tc == 0,
                "mesh '", n, "': tiles of ", tile_chip_rows_, "x", tile_chip_cols_,
                " chips do not tile ", rows_, "x", cols_, " nodes");
  for (const LinkSpec* l : {&link_, &chip_link_, &tile_link_}) {
    TESSERA_CHECK(l->bandwidth > 0 && std::isfinite(l->bandwidth) && l->latency >= 0 &&
                      std::isfinite(l->latency),
                  "mesh '", n, "': link bandwidth must be > 0 and latency >= 0 (got ", l->bandwidth,
                  " B/s, ", l->latency, " s)");
  }
  TESSERA_CHECK(node_.sram_bytes > 0, "mesh '", n, "': node SRAM must be > 0 bytes");
  for (double v : {node_.clock_hz, node_.peak_f32, node_.peak_bf16, node_.peak_cfp8}) {
    TESSERA_CHECK(v >= 0 && std::isfinite(v), "mesh '", n,
                  "': node clock and peak FLOP/s must be finite and >= 0 (got ", v, ")");
  }
  std::set<std::pair<int, int>> seen;
  for (Coord c : disabled_in_chip_) {
    TESSERA_CHECK(c.row >= 0 && c.row < chip_rows_ && c.col >= 0 && c.col < chip_cols_,
                  "mesh '", n, "': disabled node ", to_string(c), " is outside the ", chip_rows_,
                  "x", chip_cols_, " chip");
    TESSERA_CHECK(seen.insert({c.row, c.col}).second, "mesh '", n, "': disabled node ", to_string(c),
                  " is listed twice");
  }
  TESSERA_CHECK(seen.size() < static_cast<size_t>(chip_rows_) * chip_cols_, "mesh '", n,
                "': every node of the ", chip_rows_, "x", chip_cols_, " chip is disabled");
}

int Mesh::num_working_nodes() const {
  int per_chip = chip_rows_ * chip_cols_ - static_cast<int>(disabled_in_chip_.size());
  return per_chip * (rows_ / chip_rows_) * (cols_ / chip_cols_);
}

std::string Mesh::shape_string() const { return std::to_string(rows_) + "x" + std::to_string(cols_); }

int Mesh::index(Coord c) const {
  TESSERA_CHECK_INDEX(contains(c), "node ", to_string(c), " is outside mesh '", name_, "' (",
                      rows_, "x", cols_, ": rows 0..", rows_ - 1, ", cols 0..", cols_ - 1, ")");
  return c.row * cols_ + c.col;
}

void Mesh::check_index(int i, const char* what) const {
  TESSERA_CHECK_INDEX(i >= 0 && i < size(), what, " ", i, " is outside mesh '", name_, "' (",
                      size(), " nodes: 0..", size() - 1, ")");
}

Coord Mesh::coord(int i) const {
  check_index(i, "node index");
  return {i / cols_, i % cols_};
}

bool Mesh::disabled(Coord c) const {
  index(c);
  return disabled_mask_in_chip_[(c.row % chip_rows_) * chip_cols_ + c.col % chip_cols_] != 0;
}

Coord Mesh::tile_of(Coord c) const {
  Coord chip = chip_of(c);
  return {chip.row / tile_chip_rows_, chip.col / tile_chip_cols_};
}

const LinkSpec& Mesh::link_spec(Boundary b) const {
  switch (b) {
    case Boundary::chip_internal: return link_;
    case Boundary::chip: return chip_link_;
    case Boundary::tile: return tile_link_;
  }
  return link_;
}

bool Mesh::link_exists(int id) const {
  if (id < 0 || id >= num_link_ids()) return false;
  Coord c = coord(id / 4);
  switch (static_cast<Direction>(id % 4)) {
    case Direction::east: return c.col + 1 < cols_;
    case Direction::west: return c.col > 0;
    case Direction::south: return c.row + 1 < rows_;
    case Direction::north: return c.row > 0;
  }
  return false;
}

Link Mesh::link(int id) const {
  TESSERA_CHECK_INDEX(link_exists(id), "link id ", id, " names no link of mesh '", name_, "' (",
                      rows_, "x", cols_, ")");
  Coord c = coord(id / 4);
  auto d = static_cast<Direction>(id % 4);
  Coord t = c;
  switch (d) {
    case Direction::east: ++t.col; break;
    case Direction::west: --t.col; break;
    case Direction::south: ++t.row; break;
    case Direction::north: --t.row; break;
  }
  return {id / 4, index(t), d};
}

Boundary Mesh::boundary(const Link& l) const {
  Coord a = coord(l.from), b = coord(l.to);
  if (tile_of(a) != tile_of(b)) return Boundary::tile;
  if (chip_of(a) != chip_of(b)) return Boundary::chip;
  return Boundary::chip_internal;
}

std::string Mesh::link_name(const Link& l) const {
  return to_string(coord(l.from)) + "->" + to_string(coord(l.to));
}

std::vector<Link> Mesh::route(int src, int dst) const {
  check_index(src, "route source node");
  check_index(dst, "route destination node");
  std::vector<Link> out;
  Coord a = coord(src), b = coord(dst);
  out.reserve(std::abs(a.col - b.col) + std::abs(a.row - b.row));
  while (a.col != b.col) {
    Direction d = b.col > a.col ? Direction::east : Direction::west;
    Link l = link(index(a), d);
    out.push_back(l);
    a = coord(l.to);
  }
  while (a.row != b.row) {
    Direction d = b.row > a.row ? Direction::south : Direction::north;
    Link l = link(index(a), d);
    out.push_back(l);
    a = coord(l.to);
  }
  return out;
}

int Mesh::hops(int src, int dst) const {
  Coord a = coord(src), b = coord(dst);
  return std::abs(a.row - b.row) + std::abs(a.col - b.col);
}

double Mesh::route_latency(int src, int dst) const {
  double t = 0;
  for (const Link& l : route(src, dst)) t += link_spec(l).latency;
  return t;
}

double Mesh::route_bandwidth(int src, int dst) const {
  double bw = std::numeric_limits<double>::infinity();
  for (const Link& l : route(src, dst)) bw = std::min(bw, link_spec(l).bandwidth);
  return bw;
}

namespace {
std::string si(double v, const char* unit) {
  const char* prefixes[] = {"", "k", "M", "G", "T", "P", "E"};
  int p = 0;
  while (std::fabs(v) >= 1000 && p < 6) {
    v /= 1000;
    ++p;
  }
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.4g %s%s", v, prefixes[p], unit);
  return buf;
}
std::string link_str(const LinkSpec& l) {
  return si(l.bandwidth, "B/s") + " per direction, " + si(l.latency, "s") + " per hop";
}
}  // namespace

std::string Mesh::describe() const {
  std::ostringstream os;
  int disabled_nodes = size() - num_working_nodes();
  os << "mesh " << name_ << ": " << rows_ << "x" << cols_ << " nodes (" << num_working_nodes()
     << " working";
  if (disabled_nodes) os << ", " << disabled_nodes << " disabled";
  os << "); chips of " << chip_rows_ << "x" << chip_cols_ << " nodes, tiles of "
     << tile_chip_rows_ << "x" << tile_chip_cols_ << " chips, "
     << (rows_ / chip_rows_) * (cols_ / chip_cols_) << " chip(s) in "
     << (rows_ / (chip_rows_ * tile_chip_rows_)) * (cols_ / (chip_cols_ * tile_chip_cols_))
     << " tile(s)\n";
  os << "  node: " << si(static_cast<double>(node_.sram_bytes), "B") << " SRAM, "
     << si(node_.clock_hz, "Hz") << ", peak " << si(node_.peak_bf16, "FLOP/s") << " bf16, "
     << si(node_.peak_cfp8, "FLOP/s") << " cfp8, " << si(node_.peak_f32, "FLOP/s") << " f32\n";
  os << "  links: in chip " << link_str(link_) << "\n";
  if (rows_ > chip_rows_ || cols_ > chip_cols_) os << "         across chips " << link_str(chip_link_) << "\n";
  if (rows_ > chip_rows_ * tile_chip_rows_ || cols_ > chip_cols_ * tile_chip_cols_)
    os << "         across tiles " << link_str(tile_link_) << "\n";
  os << "  total: " << si(peak_flops(DType::bf16), "FLOP/s") << " bf16/cfp8, "
     << si(peak_flops(DType::f32), "FLOP/s") << " f32, " << si(static_cast<double>(sram_bytes()), "B")
     << " SRAM";
  if (host_bytes_) {
    os << "\n  host memory (DIP): " << si(static_cast<double>(host_bytes_), "B") << " at "
       << si(host_bandwidth_, "B/s") << ", " << si(host_link_bandwidth_, "B/s") << " into the tile";
  }
  return os.str();
}

bool operator==(const Mesh& a, const Mesh& b) {
  auto ls = [](const LinkSpec& x, const LinkSpec& y) {
    return x.bandwidth == y.bandwidth && x.latency == y.latency;
  };
  const NodeSpec &n = a.node_, &m = b.node_;
  return a.name_ == b.name_ && a.rows_ == b.rows_ && a.cols_ == b.cols_ &&
         a.chip_rows_ == b.chip_rows_ && a.chip_cols_ == b.chip_cols_ &&
         a.tile_chip_rows_ == b.tile_chip_rows_ && a.tile_chip_cols_ == b.tile_chip_cols_ &&
         n.sram_bytes == m.sram_bytes && n.clock_hz == m.clock_hz && n.peak_f32 == m.peak_f32 &&
         n.peak_bf16 == m.peak_bf16 && n.peak_cfp8 == m.peak_cfp8 && ls(a.link_, b.link_) &&
         ls(a.chip_link_, b.chip_link_) && ls(a.tile_link_, b.tile_link_) &&
         a.disabled_in_chip_ == b.disabled_in_chip_ && a.host_bytes_ == b.host_bytes_ &&
         a.host_bandwidth_ == b.host_bandwidth_ && a.host_link_bandwidth_ == b.host_link_bandwidth_ &&
         a.host_count_per_tile_ == b.host_count_per_tile_;
}

// ---- proto ------------------------------------------------------------------------------

proto::Mesh Mesh::to_proto() const {
  proto::Mesh p;
  p.set_name(name_);
  p.set_rows(rows_);
  p.set_cols(cols_);
  p.set_chip_rows(chip_rows_);
  p.set_chip_cols(chip_cols_);
  p.set_tile_chip_rows(tile_chip_rows_);
  p.set_tile_chip_cols(tile_chip_cols_);
  auto* n = p.mutable_node();
  n->set_sram_bytes(node_.sram_bytes);
  n->set_clock_hz(node_.clock_hz);
  for (DType t : {DType::f32, DType::bf16, DType::cfp8_e4m3, DType::cfp8_e5m2}) {
    auto* pk = n->add_peak();
    pk->set_dtype(static_cast<uint32_t>(t));
    pk->set_flops_per_s(node_.peak_flops(t));
  }
  auto set_link = [](proto::LinkSpec* q, const LinkSpec& l) {
    q->set_bandwidth_bytes_per_s(l.bandwidth);
    q->set_latency_s(l.latency);
  };
  set_link(p.mutable_link(), link_);
  set_link(p.mutable_chip_link(), chip_link_);
  set_link(p.mutable_tile_link(), tile_link_);
  for (Coord c : disabled_in_chip_) {
    auto* q = p.add_disabled_in_chip();
    q->set_row(static_cast<uint32_t>(c.row));
    q->set_col(static_cast<uint32_t>(c.col));
  }
  if (host_bytes_) {
    auto* h = p.mutable_host_memory();
    h->set_bytes(host_bytes_);
    h->set_bandwidth_bytes_per_s(host_bandwidth_);
    h->set_link_bandwidth_bytes_per_s(host_link_bandwidth_);
    h->set_count_per_tile(static_cast<uint32_t>(host_count_per_tile_));
  }
  return p;
}

Mesh Mesh::from_proto(const proto::Mesh& p) {
  auto side = [&](uint64_t v, const char* what) {
    TESSERA_CHECK(v <= static_cast<uint64_t>(kMaxSide), "mesh proto '", p.name(), "': ", what, " ",
                  v, " is more than ", kMaxSide);
    return static_cast<int>(v);
  };
  NodeSpec n;
  n.sram_bytes = p.node().sram_bytes();
  n.clock_hz = p.node().clock_hz();
  for (const auto& pk : p.node().peak()) {
    TESSERA_CHECK(dtype_id_valid(static_cast<int>(pk.dtype())), "mesh proto '", p.name(),
                  "': peak FLOP/s for unknown dtype id ", pk.dtype());
    switch (static_cast<DType>(pk.dtype())) {
      case DType::f32: n.peak_f32 = pk.flops_per_s(); break;
      case DType::bf16: n.peak_bf16 = pk.flops_per_s(); break;
      case DType::cfp8_e4m3:
      case DType::cfp8_e5m2: n.peak_cfp8 = pk.flops_per_s(); break;
      default: break;
    }
  }
  auto link = [](const proto::LinkSpec& q) { return LinkSpec{q.bandwidth_bytes_per_s(), q.latency_s()}; };
  std::vector<Coord> disabled;
  for (const auto& c : p.disabled_in_chip()) {
    disabled.push_back({side(c.row(), "disabled row"), side(c.col(), "disabled col")});
  }
  MeshBuilder b;
  b.name(p.name().empty() ? "cpu:" + std::to_string(p.rows()) + "x" + std::to_string(p.cols()) : p.name())
      .shape(side(p.rows(), "rows"), side(p.cols(), "cols"))
      .chip(side(p.chip_rows(), "chip_rows"), side(p.chip_cols(), "chip_cols"))
      .tile(side(p.tile_chip_rows(), "tile_chip_rows"), side(p.tile_chip_cols(), "tile_chip_cols"))
      .node(n)
      .links(link(p.link()), link(p.chip_link()), link(p.tile_link()))
      .disabled_in_chip(disabled);
  if (p.has_host_memory()) {
    const auto& h = p.host_memory();
    b.host_memory(h.bytes(), h.bandwidth_bytes_per_s(), h.link_bandwidth_bytes_per_s(),
                  static_cast<int>(h.count_per_tile()));
  }
  return b.build();
}

}  // namespace tessera::comms
