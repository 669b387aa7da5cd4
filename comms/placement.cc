#include <tessera/comms/placement.h>

#include <limits>

namespace tessera::comms {

Placement Placement::make(const Mesh& mesh, int grid_rows, int grid_cols) {
  TESSERA_CHECK(grid_rows >= 1 && grid_cols >= 1 && mesh.rows() % grid_rows == 0 &&
                    mesh.cols() % grid_cols == 0,
                "a ", grid_rows, "x", grid_cols, " grid of ranks does not cut mesh '", mesh.name(),
                "' (", mesh.shape_string(), ") into equal blocks: block rows must divide ",
                mesh.rows(), " and block cols must divide ", mesh.cols());
  Placement p;
  p.ranks = grid_rows * grid_cols;
  p.grid_rows = grid_rows;
  p.grid_cols = grid_cols;
  p.block_rows = mesh.rows() / grid_rows;
  p.block_cols = mesh.cols() / grid_cols;
  p.mesh_rows = mesh.rows();
  p.mesh_cols = mesh.cols();
  return p;
}

Placement Placement::make(const Mesh& mesh, int ranks) {
  TESSERA_CHECK(ranks >= 1 && ranks <= mesh.size() && mesh.size() % ranks == 0, ranks,
                " ranks cannot host mesh '", mesh.name(), "' (", mesh.shape_string(), ", ",
                mesh.size(), " nodes): the number of ranks must divide the number of nodes, so "
                "that each rank hosts an equal rectangular block");
  int best_a = 0;
  int64_t best_cut = std::numeric_limits<int64_t>::max();
  for (int a = 1; a <= ranks; ++a) {
    if (ranks % a || mesh.rows() % a || mesh.cols() % (ranks / a)) continue;
    int b = ranks / a;
    int64_t cut = int64_t{a - 1} * mesh.cols() + int64_t{b - 1} * mesh.rows();
    if (cut < best_cut) {
      best_cut = cut;
      best_a = a;
    }
  }
  TESSERA_INTERNAL_ASSERT(best_a > 0, "no block grid for ", ranks, " ranks on ", mesh.shape_string());
  return make(mesh, best_a, ranks / best_a);
}

std::vector<int> Placement::nodes_of(int rank) const {
  TESSERA_CHECK_INDEX(rank >= 0 && rank < ranks, "rank ", rank, " is outside the ", ranks,
                      " ranks of this placement");
  Coord o = block_origin(rank);
  std::vector<int> out;
  out.reserve(static_cast<size_t>(nodes_per_rank()));
  for (int r = 0; r < block_rows; ++r) {
    for (int c = 0; c < block_cols; ++c) out.push_back((o.row + r) * mesh_cols + o.col + c);
  }
  return out;
}

std::string Placement::describe() const {
  return std::to_string(ranks) + " rank" + (ranks == 1 ? "" : "s") + " as " +
         std::to_string(grid_rows) + "x" + std::to_string(grid_cols) + " blocks of " +
         std::to_string(block_rows) + "x" + std::to_string(block_cols) + " nodes";
}

}  // namespace tessera::comms
