// Which rank hosts which mesh nodes: the mesh is cut into equal rectangular blocks, one per
// rank, ranks numbered row-major over the grid of blocks.
//
//   Placement p = Placement::make(Mesh::parse("3x5"), 3);   // blocks of 1x5: rank r hosts row r
//   p.rank_of(mesh.index({2, 4}));                          // 2
//
// Any number of ranks that divides rows * cols fits: it always factors as a x b with a
// dividing rows and b dividing cols. Among the factorizations make() picks the one that cuts
// the fewest mesh links between ranks (ties: fewer block rows). Otherwise ValueError.
#pragma once

#include <tessera/comms/mesh.h>

#include <vector>

namespace tessera::comms {

struct Placement {
  static Placement make(const Mesh& mesh, int ranks);
  // An explicit grid of grid_rows x grid_cols blocks.
  static Placement make(const Mesh& mesh, int grid_rows, int grid_cols);

  int ranks = 1;
  int grid_rows = 1, grid_cols = 1;    // blocks
  int block_rows = 1, block_cols = 1;  // nodes per block
  int mesh_rows = 1, mesh_cols = 1;

  int nodes_per_rank() const { return block_rows * block_cols; }
  int rank_of(int node) const {
    int r = node / mesh_cols, c = node % mesh_cols;
    return (r / block_rows) * grid_cols + c / block_cols;
  }
  Coord block_origin(int rank) const {
    return {(rank / grid_cols) * block_rows, (rank % grid_cols) * block_cols};
  }
  // Position of a node inside its rank's block, row-major.
  int local_index(int node) const {
    int r = node / mesh_cols, c = node % mesh_cols;
    return (r % block_rows) * block_cols + c % block_cols;
  }
  // The nodes `rank` hosts, row-major within its block.
  std::vector<int> nodes_of(int rank) const;
  std::string describe() const;  // "3 ranks as 3x1 blocks of 1x5 nodes"
};

}  // namespace tessera::comms
