// Mesh presets from Tesla's published figures. Sources:
//   [AID]  Tesla AI Day 2021 (Aug 19 2021), Dojo section: training node, D1 chip, training
//          tile, ExaPOD slides.
//   [HC34] Hot Chips 34 (Aug 2022), E. Talpes et al., "DOJO: The Microarchitecture of Tesla's
//          Exa-Scale Computer" and "DOJO - Super-Compute System Scaling for ML Training".
// Where Tesla published no number (hop latencies, the D1 node grid, which nodes are disabled,
// how tiles are arranged in an ExaPOD), the value is tessera's assumption and says so.
#include <tessera/comms/mesh.h>

namespace tessera::comms {

NodeSpec dojo_node_spec() {
  NodeSpec n;
  n.sram_bytes = 1'250'000;  // 1.25 MB SRAM per node [AID]; 354 x 1.25 MB = 442.5 MB ~ "440 MB" per D1 [AID]
  n.clock_hz = 2e9;          // 2 GHz [AID]
  n.peak_bf16 = 1.024e12;    // 1,024 GFLOP/s BF16/CFP8 per node [AID]
  n.peak_cfp8 = 1.024e12;    // same [AID]
  n.peak_f32 = 64e9;         // 64 GFLOP/s FP32 per node [AID]
  return n;
}

LinkSpec dojo_node_link() {
  // 512 GB/s in each of the four directions between neighbouring nodes [AID].
  // Hop latency: not published; tessera assumes 2 ns (4 router cycles at 2 GHz).
  return {512e9, 2e-9};
}

namespace {

// Between chips: 4 TB/s per D1 edge [AID] shared by the links crossing that edge; tessera
// divides it over the longer edge's 20 node links: 200 GB/s per link (conservative for the
// 18-node edge). Latency not published: tessera assumes 100 ns for a die-to-die SerDes hop.
LinkSpec d1_chip_link() { return {4e12 / 20, 100e-9}; }

// Between tiles: 9 TB/s per tile edge [AID: 36 TB/s off-tile, 4 edges] over the 5 x 20 = 100
// node links of a tile edge: 90 GB/s per link. Latency not published: tessera assumes 500 ns.
LinkSpec tile_edge_link() { return {9e12 / 100, 500e-9}; }

// D1 geometry. 354 working training nodes per D1 [AID, HC34]. The physical node grid is not
// published: tessera uses 18 rows x 20 cols = 360 nodes with 6 disabled (yield redundancy).
// Which 6 are fused off is tessera's choice: spread so that no row or column loses two.
constexpr int kD1Rows = 18, kD1Cols = 20;
std::vector<Coord> d1_disabled() { return {{1, 3}, {4, 16}, {7, 9}, {10, 1}, {13, 12}, {16, 7}}; }

// Training tile: 5 x 5 D1 chips [AID] (25 chips, 9 PFLOP/s, 11 GB SRAM).
constexpr int kTileChips = 5;
// ExaPOD: 120 training tiles [AID] in 10 cabinets of 12 tiles [AID]; tessera lays them out as a
// 10 x 12 grid of tiles (the physical arrangement of the tile-to-tile fabric is not published).
constexpr int kExapodTileRows = 10, kExapodTileCols = 12;

MeshBuilder dojo(std::string name) {
  MeshBuilder b;
  b.name(std::move(name)).node(dojo_node_spec());
  b.links(dojo_node_link(), d1_chip_link(), tile_edge_link());
  return b;
}

MeshBuilder with_dip(MeshBuilder b) {
  // Dojo Interface Processor: 32 GB HBM at 800 GB/s, 900 GB/s into the tile [HC34]. How many
  // attach to one tile depends on the system; tessera records 0 (not modelled).
  b.host_memory(32'000'000'000ull, 800e9, 900e9, 0);
  return b;
}

}  // namespace

std::vector<std::string> Mesh::preset_names() { return {"node", "d1", "tile", "exapod"}; }

Mesh Mesh::preset(std::string_view name) {
  if (name == "node") {
    return dojo("node").shape(1, 1).chip(1, 1).tile(1, 1).build();
  }
  if (name == "d1") {
    return dojo("d1")
        .shape(kD1Rows, kD1Cols)
        .chip(kD1Rows, kD1Cols)
        .tile(1, 1)
        .disabled_in_chip(d1_disabled())
        .build();
  }
  if (name == "tile") {
    return with_dip(dojo("tile"))
        .shape(kD1Rows * kTileChips, kD1Cols * kTileChips)
        .chip(kD1Rows, kD1Cols)
        .tile(kTileChips, kTileChips)
        .disabled_in_chip(d1_disabled())
        .build();
  }
  if (name == "exapod") {
    return with_dip(dojo("exapod"))
        .shape(kD1Rows * kTileChips * kExapodTileRows, kD1Cols * kTileChips * kExapodTileCols)
        .chip(kD1Rows, kD1Cols)
        .tile(kTileChips, kTileChips)
        .disabled_in_chip(d1_disabled())
        .build();
  }
  std::string known;
  for (const auto& n : preset_names()) known += (known.empty() ? "" : ", ") + n;
  TESSERA_THROW(ValueError, "unknown mesh preset '", name, "' (known: ", known,
                ", or cpu:RxC / RxC for a plain grid)");
}

}  // namespace tessera::comms
