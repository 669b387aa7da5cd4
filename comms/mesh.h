// The mesh: a rows x cols grid of training nodes as data (DESIGN §4).
//
//   Mesh m = Mesh::parse("d1");               // or "2x2", "cpu:3x5", "node", "tile", "exapod"
//   int i = m.index({2, 3});                   // row-major: 2 * cols + 3
//   for (const Link& l : m.route(m.index({0, 0}), m.index({2, 3}))) ...   // X (cols) first, then Y
//   m.link_spec(l).bandwidth                   // bytes/s per direction; depends on the boundary
//
// Units: bytes, seconds, FLOP/s. Coordinates are (row, col); out-of-range coordinates and
// indices throw IndexError. A Mesh is an immutable value: copy it freely, share it across
// threads. Presets and the public source of each number: comms/mesh_presets.cc.
#pragma once

#include <tessera/core/dtype.h>
#include <tessera/core/error.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace tessera::proto {
class Mesh;
}

namespace tessera::comms {

struct Coord {
  int row = 0;
  int col = 0;
  friend bool operator==(Coord a, Coord b) { return a.row == b.row && a.col == b.col; }
  friend bool operator!=(Coord a, Coord b) { return !(a == b); }
};
std::string to_string(Coord c);  // "(r,c)"

struct NodeSpec {
  uint64_t sram_bytes = 0;
  double clock_hz = 0;
  double peak_f32 = 0;   // FLOP/s
  double peak_bf16 = 0;
  double peak_cfp8 = 0;  // both cfp8 layouts
  // Peak FLOP/s for compute in `t`; 0 for dtypes the node does not compute in.
  double peak_flops(DType t) const;
};

struct LinkSpec {
  double bandwidth = 0;  // bytes/s, one direction
  double latency = 0;    // s, one hop
};

// The widest boundary a link crosses.
enum class Boundary : uint8_t { chip_internal = 0, chip = 1, tile = 2 };
const char* boundary_name(Boundary b);  // "node", "chip", "tile"

enum class Direction : uint8_t { east = 0, west = 1, south = 2, north = 3 };
const char* direction_name(Direction d);  // "E", "W", "S", "N"

// A directed link between neighbouring nodes. id = from * 4 + dir (dense, for tables).
struct Link {
  int from = 0;
  int to = 0;
  Direction dir = Direction::east;
  int id() const { return from * 4 + static_cast<int>(dir); }
  friend bool operator==(const Link& a, const Link& b) { return a.from == b.from && a.dir == b.dir; }
};

class Mesh {
 public:
  // Limits on a parsed or constructed grid: each side at most kMaxSide, at most kMaxNodes nodes
  // (the ExaPOD preset, 900 x 1200, is well inside).
  static constexpr int kMaxSide = 65536;
  static constexpr int64_t kMaxNodes = int64_t{1} << 22;

  Mesh();  // cpu:1x1

  // A plain emulation grid of Dojo training nodes, all links alike (preset "cpu:RxC").
  static Mesh grid(int rows, int cols);
  // "node", "d1", "tile", "exapod". Unknown names throw ValueError listing the known ones.
  static Mesh preset(std::string_view name);
  static std::vector<std::string> preset_names();
  // "RxC", "cpu:RxC" or a preset name. Bad strings throw ValueError naming the string and rule.
  static Mesh parse(std::string_view spec);

  static Mesh from_proto(const proto::Mesh& p);  // validates like parse(); ValueError
  proto::Mesh to_proto() const;

  const std::string& name() const { return name_; }
  int rows() const { return rows_; }
  int cols() const { return cols_; }
  int size() const { return rows_ * cols_; }
  int num_working_nodes() const;
  std::string shape_string() const;  // "18x20"

  int index(Coord c) const;
  Coord coord(int index) const;
  bool contains(Coord c) const { return c.row >= 0 && c.row < rows_ && c.col >= 0 && c.col < cols_; }
  // Fused-off nodes (a D1 has 6 of its 360): left out of num_working_nodes() and the preset's
  // FLOP/s and SRAM totals; their routers still forward. Collectives and data-parallel training
  // do not consult this: they treat every rows x cols node as working.
  bool disabled(Coord c) const;

  // Hierarchy. chip_rows/cols: nodes per chip; tile_chip_rows/cols: chips per tile.
  int chip_rows() const { return chip_rows_; }
  int chip_cols() const { return chip_cols_; }
  int tile_chip_rows() const { return tile_chip_rows_; }
  int tile_chip_cols() const { return tile_chip_cols_; }
  Coord chip_of(Coord c) const { return {c.row / chip_rows_, c.col / chip_cols_}; }
  Coord tile_of(Coord c) const;

  const NodeSpec& node_spec() const { return node_; }
  const LinkSpec& link_spec(Boundary b) const;
  const LinkSpec& link_spec(const Link& l) const { return link_spec(boundary(l)); }

  // Directed links: ids 0 .. num_link_ids()-1; ids on the mesh edge (no neighbour) are unused.
  int num_link_ids() const { return size() * 4; }
  bool link_exists(int id) const;
  Link link(int id) const;  // IndexError when the id names no link
  Link link(int from, Direction d) const { return link(from * 4 + static_cast<int>(d)); }
  Boundary boundary(const Link& l) const;
  std::string link_name(const Link& l) const;  // "(0,1)->(0,2)"

  // Dimension-ordered route: along the row (X, columns) first, then along the column (Y, rows).
  // Empty when src == dst.
  std::vector<Link> route(int src, int dst) const;
  std::vector<Link> route(Coord src, Coord dst) const { return route(index(src), index(dst)); }
  int hops(int src, int dst) const;
  int hops(Coord a, Coord b) const { return hops(index(a), index(b)); }
  // Sum of hop latencies and the narrowest link on the route (0 hops: 0 and +inf).
  double route_latency(int src, int dst) const;
  double route_bandwidth(int src, int dst) const;

  // Totals over working nodes.
  double peak_flops(DType t) const { return node_.peak_flops(t) * num_working_nodes(); }
  uint64_t sram_bytes() const { return node_.sram_bytes * static_cast<uint64_t>(num_working_nodes()); }
  // A few lines: shape, hierarchy, node and link specs, totals.
  std::string describe() const;

  friend bool operator==(const Mesh& a, const Mesh& b);

 private:
  void validate() const;
  void check_index(int index, const char* what) const;

  std::string name_ = "cpu:1x1";
  int rows_ = 1, cols_ = 1;
  int chip_rows_ = 1, chip_cols_ = 1;         // normalized: never 0 once constructed
  int tile_chip_rows_ = 1, tile_chip_cols_ = 1;
  NodeSpec node_;
  LinkSpec link_, chip_link_, tile_link_;
  std::vector<Coord> disabled_in_chip_;
  std::vector<uint8_t> disabled_mask_in_chip_;  // chip_rows * chip_cols
  // Host memory (Dojo Interface Processor), informational only.
  uint64_t host_bytes_ = 0;
  double host_bandwidth_ = 0, host_link_bandwidth_ = 0;
  int host_count_per_tile_ = 0;

  friend struct MeshBuilder;
};

// Used by the preset table (mesh_presets.cc) to assemble meshes field by field.
struct MeshBuilder {
  Mesh m;
  MeshBuilder& name(std::string n) { m.name_ = std::move(n); return *this; }
  MeshBuilder& shape(int rows, int cols) { m.rows_ = rows; m.cols_ = cols; return *this; }
  MeshBuilder& chip(int rows, int cols) { m.chip_rows_ = rows; m.chip_cols_ = cols; return *this; }
  MeshBuilder& tile(int chip_rows, int chip_cols) {
    m.tile_chip_rows_ = chip_rows; m.tile_chip_cols_ = chip_cols; return *this;
  }
  MeshBuilder& node(NodeSpec s) { m.node_ = s; return *this; }
  MeshBuilder& links(LinkSpec in_chip, LinkSpec chip, LinkSpec tile) {
    m.link_ = in_chip; m.chip_link_ = chip; m.tile_link_ = tile; return *this;
  }
  MeshBuilder& disabled_in_chip(std::vector<Coord> d) { m.disabled_in_chip_ = std::move(d); return *this; }
  MeshBuilder& host_memory(uint64_t bytes, double bw, double link_bw, int per_tile) {
    m.host_bytes_ = bytes; m.host_bandwidth_ = bw; m.host_link_bandwidth_ = link_bw;
    m.host_count_per_tile_ = per_tile; return *this;
  }
  Mesh build();  // validates; ValueError
};

// The Dojo training node and its neighbour links (the `node` preset's specs).
NodeSpec dojo_node_spec();
LinkSpec dojo_node_link();

}  // namespace tessera::comms
