// Link accounting on known routes: a point-to-point message, a ring all-reduce on a line, a
// mesh2d all-reduce on 2x2, the emulated time, the busiest-links table, the CSV, gathering.
#include "loopback_world.h"

#include <tessera/comms/collectives.h>

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <sstream>

namespace tessera::comms {
namespace {

uint64_t bytes_on(const LinkStats& s, const Mesh& m, Coord a, Coord b) {
  auto r = m.route(a, b);
  EXPECT_EQ(r.size(), 1u);
  return s.bytes(r[0].id());
}

TEST(LinkStats, PointToPointChargesEveryLinkOfTheRoute) {
  Mesh m = Mesh::parse("4x4");
  Charges ch;
  ch.add(m, m.index({0, 0}), m.index({2, 3}), 100);
  LinkStats s(m);
  CollectiveRecord rec;
  rec.kind = OpKind::sendrecv;
  rec = s.record(rec, ch, 5 * 2e-9);
  EXPECT_EQ(rec.payload_bytes, 100u);
  EXPECT_EQ(rec.link_bytes, 500u);
  for (const Link& l : m.route(Coord{0, 0}, Coord{2, 3})) EXPECT_EQ(s.bytes(l.id()), 100u);
  EXPECT_EQ(s.bytes(m.route(Coord{0, 0}, Coord{1, 0})[0].id()), 0u);  // not on the route
  EXPECT_EQ(s.total_link_bytes(), 500u);
  EXPECT_DOUBLE_EQ(rec.emulated_s, 10e-9 + 100 / 512e9);
}

TEST(LinkStats, RingAllreduceOnALine) {
  Mesh m = Mesh::parse("1x4");
  auto errors = testing::run_loopback(m, 1, [&](MeshComm& c) {
    std::vector<std::vector<float>> b(4, std::vector<float>(8, 1.0f));
    AllreduceOptions o;
    o.count = 8;  // 4 chunks of 2 floats = 8 bytes; 3 + 3 steps
    o.algorithm = Algorithm::ring;
    for (auto& v : b) {
      o.inputs.push_back(v.data());
      o.outputs.push_back(v.data());
    }
    auto rec = allreduce(c.world(), o);
    const LinkStats& s = c.link_stats();
    // Every node sends 6 x 8 bytes to its ring successor; 3 -> 0 closes the ring westwards.
    EXPECT_EQ(rec.payload_bytes, 4u * 48);
    EXPECT_EQ(bytes_on(s, m, {0, 0}, {0, 1}), 48u);
    EXPECT_EQ(bytes_on(s, m, {0, 2}, {0, 3}), 48u);
    EXPECT_EQ(bytes_on(s, m, {0, 3}, {0, 2}), 48u);
    EXPECT_EQ(bytes_on(s, m, {0, 1}, {0, 0}), 48u);
    EXPECT_EQ(rec.link_bytes, 6u * 48);
    // Latency: 6 steps paced by the 3-hop closing route; bandwidth: 48 bytes on a link.
    EXPECT_NEAR(rec.emulated_s, 6 * 3 * 2e-9 + 48 / 512e9, 1e-18);
    EXPECT_EQ(b[2][5], 4.0f);
  });
  EXPECT_EQ(errors[0], "");
}

TEST(LinkStats, Mesh2dAllreduceOn2x2AndTheTables) {
  Mesh m = Mesh::parse("2x2");
  std::string csv = ::testing::TempDir() + "/links.csv";
  auto errors = testing::run_loopback(m, 4, [&](MeshComm& c) {
    std::vector<float> v(8, 1.0f);
    AllreduceOptions o;
    o.count = 8;
    o.algorithm = Algorithm::mesh2d;
    o.inputs = {v.data()};
    o.outputs = {v.data()};
    auto rec = allreduce(c.world(), o);
    // Row phase: 16 bytes each way, twice; column phase: 8 bytes, twice.
    EXPECT_EQ(rec.payload_bytes, 48u);
    const LinkStats& s = c.link_stats();
    Coord me = m.coord(c.local_nodes()[0]);
    Coord east{me.row, 1 - me.col}, south{1 - me.row, me.col};
    EXPECT_EQ(bytes_on(s, m, me, east), 32u);
    EXPECT_EQ(bytes_on(s, m, me, south), 16u);
    EXPECT_NEAR(rec.emulated_s, 2 * 2e-9 + 2 * 2e-9 + 32 / 512e9, 1e-18);
    LinkStats all = gather_link_stats(c);
    if (c.rank() == 0) {
      EXPECT_EQ(all.total_link_bytes(), 4u * 48);
      auto top = all.busiest(4);
      ASSERT_EQ(top.size(), 4u);
      EXPECT_EQ(top[0].second, 32u);
      std::string table = all.top_links(3);
      EXPECT_NE(table.find("(0,0)->(0,1)"), std::string::npos) << table;
      EXPECT_NE(all.summary().find("allreduce"), std::string::npos);
      all.write_csv(csv, /*include_idle=*/true);
    }
    EXPECT_EQ(v[0], 4.0f);
  });
  for (auto& e : errors) EXPECT_EQ(e, "");
  std::ifstream f(csv);
  std::string line;
  std::getline(f, line);
  EXPECT_EQ(line.rfind("link_id,from_row,from_col,to_row,to_col,direction,boundary", 0), 0u) << line;
  int rows = 0;
  uint64_t sum = 0;
  while (std::getline(f, line)) {
    ++rows;
    std::stringstream ss(line);
    std::string cell;
    for (int i = 0; i < 10; ++i) std::getline(ss, cell, ',');
    sum += std::stoull(cell);
  }
  EXPECT_EQ(rows, 8);  // 2x2: 8 directed links
  EXPECT_EQ(sum, 4u * 48);
  EXPECT_THROW(LinkStats(m).write_csv("/nonexistent-dir/x.csv"), IoError);
}

TEST(LinkStats, SerializeRoundTripAndCorruption) {
  Mesh m = Mesh::parse("2x3");
  LinkStats s(m);
  Charges ch;
  ch.add(m, 0, 5, 64);
  CollectiveRecord r;
  r.kind = OpKind::broadcast;
  r.algorithm = "ring";
  s.record(r, ch, 0);
  LinkStats back = LinkStats::deserialize(m, s.serialize());
  EXPECT_EQ(back.total_link_bytes(), s.total_link_bytes());
  ASSERT_EQ(back.records().size(), 1u);
  EXPECT_EQ(back.records()[0].algorithm, "ring");
  std::string blob = s.serialize();
  EXPECT_THROW(LinkStats::deserialize(m, blob.substr(0, blob.size() - 3)), RemoteError);
  EXPECT_THROW(LinkStats::deserialize(m, "junk"), RemoteError);
}

}  // namespace
}  // namespace tessera::comms
