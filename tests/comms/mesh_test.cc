// Mesh as data: parsing, presets and their published numbers, coordinates, routing, hops,
// hierarchy boundaries, proto round trip, placement of ranks.
#include <tessera/comms/mesh.h>
#include <tessera/comms/placement.h>
#include <tessera/proto/mesh.pb.h>

#include <gtest/gtest.h>

namespace tessera::comms {
namespace {

std::string value_error(const std::string& s) {
  try {
    Mesh::parse(s);
  } catch (const ValueError& e) {
    return e.what();
  }
  ADD_FAILURE() << "'" << s << "' was accepted";
  return "";
}

TEST(MeshParse, GoodStrings) {
  Mesh a = Mesh::parse("2x2");
  EXPECT_EQ(a.rows(), 2);
  EXPECT_EQ(a.cols(), 2);
  EXPECT_EQ(a.name(), "cpu:2x2");
  Mesh b = Mesh::parse("cpu:3x5");
  EXPECT_EQ(b.rows(), 3);
  EXPECT_EQ(b.cols(), 5);
  EXPECT_EQ(b.size(), 15);
  EXPECT_EQ(Mesh::parse("1x1").size(), 1);
  EXPECT_EQ(Mesh::parse("tile").rows(), 90);
  EXPECT_EQ(Mesh::parse("65536x1").rows(), 65536);
  EXPECT_EQ(Mesh::parse("0000000002x02").rows(), 2);  // leading zeros are not digits of size
  EXPECT_EQ(Mesh::parse("0000000002x02").cols(), 2);
}

TEST(MeshParse, BadStringsNameTheStringAndTheRule) {
  for (const char* s : {"0x3", "-1x2", "2x", "x2", "axb", "100000x100000", "", "2x2x2", "2*2",
                        " 2x2", "cpu:", "cpu:0x1", "2x3000000", "2048x4096", "d2", "1.5x2"}) {
    std::string m = value_error(s);
    EXPECT_NE(m.find(std::string("'") + s + "'"), std::string::npos) << m;
  }
  EXPECT_NE(value_error("0x3").find("at least 1"), std::string::npos);
  EXPECT_NE(value_error("000x3").find("at least 1"), std::string::npos);
  EXPECT_NE(value_error("00001000000000x3").find("absurd"), std::string::npos);
  EXPECT_NE(value_error("-1x2").find("not a positive integer"), std::string::npos);
  EXPECT_NE(value_error("2x").find("cols is missing"), std::string::npos);
  EXPECT_NE(value_error("x2").find("rows is missing"), std::string::npos);
  EXPECT_NE(value_error("100000x100000").find("absurd"), std::string::npos);
  EXPECT_NE(value_error("2048x4096").find("absurd"), std::string::npos);
  EXPECT_NE(value_error("axb").find("RxC"), std::string::npos);
}

TEST(MeshPresets, PublishedNumbers) {
  Mesh node = Mesh::preset("node");
  EXPECT_EQ(node.size(), 1);
  EXPECT_EQ(node.node_spec().sram_bytes, 1'250'000u);
  EXPECT_DOUBLE_EQ(node.node_spec().peak_bf16, 1.024e12);
  EXPECT_DOUBLE_EQ(node.node_spec().peak_flops(DType::cfp8_e4m3), 1.024e12);
  EXPECT_DOUBLE_EQ(node.node_spec().peak_f32, 64e9);
  EXPECT_DOUBLE_EQ(node.node_spec().clock_hz, 2e9);

  Mesh d1 = Mesh::preset("d1");
  EXPECT_EQ(d1.rows(), 18);
  EXPECT_EQ(d1.cols(), 20);
  EXPECT_EQ(d1.num_working_nodes(), 354);
  EXPECT_NEAR(d1.peak_flops(DType::bf16), 362e12, 1e12);  // "362 TFLOPS"
  EXPECT_NEAR(static_cast<double>(d1.sram_bytes()), 440e6, 5e6);  // "440 MB"
  EXPECT_DOUBLE_EQ(d1.link_spec(Boundary::chip_internal).bandwidth, 512e9);
  int disabled = 0;
  for (int i = 0; i < d1.size(); ++i) disabled += d1.disabled(d1.coord(i));
  EXPECT_EQ(disabled, 6);

  Mesh tile = Mesh::preset("tile");
  EXPECT_EQ(tile.rows(), 90);
  EXPECT_EQ(tile.cols(), 100);
  EXPECT_EQ(tile.num_working_nodes(), 25 * 354);
  EXPECT_NEAR(tile.peak_flops(DType::bf16), 9e15, 0.1e15);            // "9 PFLOPS"
  EXPECT_NEAR(static_cast<double>(tile.sram_bytes()), 11e9, 0.1e9);    // "11 GB"
  // 4 TB/s per chip edge over 20 links, 9 TB/s per tile edge over 100 links.
  EXPECT_DOUBLE_EQ(tile.link_spec(Boundary::chip).bandwidth * 20, 4e12);

  Mesh pod = Mesh::preset("exapod");
  EXPECT_EQ(pod.size(), 120 * 25 * 360);
  EXPECT_EQ(pod.num_working_nodes(), 120 * 25 * 354);
  EXPECT_NEAR(pod.peak_flops(DType::bf16), 1.1e18, 0.05e18);            // "1.1 EFLOPS"
  EXPECT_DOUBLE_EQ(pod.link_spec(Boundary::tile).bandwidth * 100, 9e12);

  EXPECT_THROW(Mesh::preset("d2"), ValueError);
  EXPECT_NE(d1.describe().find("354 working"), std::string::npos) << d1.describe();
}

TEST(MeshCoords, RowMajorAndOutOfRangeThrowsIndexError) {
  Mesh m = Mesh::parse("3x5");
  EXPECT_EQ(m.index({2, 3}), 13);
  EXPECT_EQ(m.coord(13), (Coord{2, 3}));
  EXPECT_THROW(m.index({3, 0}), IndexError);
  EXPECT_THROW(m.index({0, -1}), IndexError);
  EXPECT_THROW(m.coord(15), IndexError);
  EXPECT_THROW(m.route(0, 15), IndexError);
  EXPECT_THROW(m.link(4 * 4 + 0), IndexError);  // (0,4) has no east neighbour
  try {
    m.index({7, 1});
  } catch (const IndexError& e) {
    EXPECT_NE(std::string(e.what()).find("(7,1)"), std::string::npos) << e.what();
  }
}

TEST(MeshRouting, DimensionOrderedXThenY) {
  Mesh m = Mesh::parse("4x4");
  auto r = m.route(Coord{0, 0}, Coord{2, 3});
  ASSERT_EQ(r.size(), 5u);
  std::vector<std::string> names;
  for (const Link& l : r) names.push_back(m.link_name(l));
  EXPECT_EQ(names, (std::vector<std::string>{"(0,0)->(0,1)", "(0,1)->(0,2)", "(0,2)->(0,3)",
                                             "(0,3)->(1,3)", "(1,3)->(2,3)"}));
  auto back = m.route(Coord{2, 3}, Coord{0, 0});  // X first again: a different path back
  EXPECT_EQ(m.link_name(back[0]), "(2,3)->(2,2)");
  EXPECT_EQ(m.link_name(back[4]), "(1,0)->(0,0)");
  EXPECT_EQ(m.hops(Coord{0, 0}, Coord{2, 3}), 5);
  EXPECT_TRUE(m.route(5, 5).empty());
  EXPECT_EQ(r[0].dir, Direction::east);
  EXPECT_EQ(r[3].dir, Direction::south);
  EXPECT_DOUBLE_EQ(m.route_latency(0, m.index({2, 3})), 5 * m.link_spec(Boundary::chip_internal).latency);
}

TEST(MeshHierarchy, BoundaryLinksHaveTheirOwnSpecs) {
  Mesh t = Mesh::preset("tile");
  // (0,19)->(0,20) crosses a chip edge; (0,0)->(0,1) does not.
  Link inside = t.route(Coord{0, 0}, Coord{0, 1})[0];
  Link chip = t.route(Coord{0, 19}, Coord{0, 20})[0];
  Link down = t.route(Coord{17, 0}, Coord{18, 0})[0];
  EXPECT_EQ(t.boundary(inside), Boundary::chip_internal);
  EXPECT_EQ(t.boundary(chip), Boundary::chip);
  EXPECT_EQ(t.boundary(down), Boundary::chip);
  Mesh pod = Mesh::preset("exapod");
  Link tile_edge = pod.route(Coord{0, 99}, Coord{0, 100})[0];
  EXPECT_EQ(pod.boundary(tile_edge), Boundary::tile);
  EXPECT_LT(pod.link_spec(tile_edge).bandwidth, pod.link_spec(chip).bandwidth);
  EXPECT_DOUBLE_EQ(t.route_bandwidth(t.index({0, 0}), t.index({0, 25})), 4e12 / 20);
}

TEST(MeshProto, RoundTripEveryPreset) {
  for (const char* s : {"node", "d1", "tile", "exapod", "cpu:3x5"}) {
    Mesh m = Mesh::parse(s);
    proto::Mesh p = m.to_proto();
    std::string bytes;
    ASSERT_TRUE(p.SerializeToString(&bytes));
    proto::Mesh q;
    ASSERT_TRUE(q.ParseFromString(bytes));
    Mesh back = Mesh::from_proto(q);
    EXPECT_TRUE(back == m) << s;
    EXPECT_EQ(back.num_working_nodes(), m.num_working_nodes());
  }
  proto::Mesh bad = Mesh::parse("2x2").to_proto();
  bad.set_chip_rows(3);
  EXPECT_THROW(Mesh::from_proto(bad), ValueError);
  bad = Mesh::parse("2x2").to_proto();
  bad.mutable_link()->set_bandwidth_bytes_per_s(0);
  EXPECT_THROW(Mesh::from_proto(bad), ValueError);
  bad = Mesh::parse("2x2").to_proto();
  bad.set_rows(1u << 20);
  EXPECT_THROW(Mesh::from_proto(bad), ValueError);
  // d1 fuses off 6 of its 360 nodes: the same node listed twice is refused, not counted twice.
  bad = Mesh::parse("d1").to_proto();
  ASSERT_GT(bad.disabled_in_chip_size(), 0);
  *bad.add_disabled_in_chip() = bad.disabled_in_chip(0);
  EXPECT_THROW(Mesh::from_proto(bad), ValueError);
  bad = Mesh::parse("2x2").to_proto();
  ASSERT_GT(bad.node().peak_size(), 0);
  bad.mutable_node()->mutable_peak(0)->set_flops_per_s(-1);
  EXPECT_THROW(Mesh::from_proto(bad), ValueError);
}

TEST(Placement, BlocksForEveryDivisor) {
  Mesh m = Mesh::parse("3x5");
  for (int ranks : {1, 3, 5, 15}) {
    Placement p = Placement::make(m, ranks);
    EXPECT_EQ(p.ranks, ranks);
    std::vector<int> owner(15, -1);
    for (int r = 0; r < ranks; ++r)
      for (int n : p.nodes_of(r)) {
        EXPECT_EQ(owner[n], -1);
        owner[n] = r;
        EXPECT_EQ(p.rank_of(n), r);
      }
    for (int o : owner) EXPECT_GE(o, 0);
  }
  EXPECT_EQ(Placement::make(m, 3).block_cols, 5);  // rows: cuts 10 links instead of ...
  EXPECT_THROW(Placement::make(m, 4), ValueError);
  EXPECT_THROW(Placement::make(m, 30), ValueError);
  EXPECT_THROW(Placement::make(m, 2, 1), ValueError);
  Placement q = Placement::make(Mesh::parse("4x6"), 12);  // 12 = a*b, a | 4, b | 6
  EXPECT_EQ(q.block_rows * q.block_cols, 2);
  try {
    Placement::make(m, 4);
  } catch (const ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("4 ranks"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace tessera::comms
