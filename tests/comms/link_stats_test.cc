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

// The latency term follows the messages' real routes: a chain broadcast on a line, and a
// periodic halo exchange whose wrap-around message crosses the whole row.
TEST(LinkStats, BroadcastAndPeriodicHaloLatencyFollowTheRoutes) {
  Mesh m = Mesh::parse("1x8");  // every hop 2 ns, 512 GB/s
  auto errors = testing::run_loopback(m, 8, [&](MeshComm& c) {
    const int me = c.local_nodes()[0];
    float x = 1.0f;
    BroadcastOptions b;
    b.buffers = {&x};
    b.count = 1;
    b.root = 3;
    b.algorithm = Algorithm::mesh2d;  // outwards from column 3: 4 hops to column 7
    auto rec = broadcast(c.world(), b);
    if (me == 3) {
      EXPECT_NEAR(rec.emulated_s, 4 * 2e-9 + 4 / 512e9, 1e-18);  // the root sends 4 bytes
    }
    b.algorithm = Algorithm::ring;    // 3 -> 7 (4 hops), the wrap 7 -> 0 (7), 0 -> 2 (2)
    rec = broadcast(c.world(), b);
    if (me == 3) {
      EXPECT_NEAR(rec.emulated_s, 13 * 2e-9 + 4 / 512e9, 1e-18);
    }
    EXPECT_EQ(x, 1.0f);

    float out[2] = {0, 0};
    HaloOptions h;
    h.count = {1, 1, 0, 0};
    h.periodic = true;
    h.nodes.resize(1);
    h.nodes[0].send = {&x, &x, nullptr, nullptr};
    h.nodes[0].recv = {&out[0], &out[1], nullptr, nullptr};
    rec = halo_exchange(c.world(), h);
    if (me == 0) {
      // West wraps to column 7 over 7 eastward links; link 0->1 carries both messages.
      EXPECT_NEAR(rec.emulated_s, 7 * 2e-9 + 8 / 512e9, 1e-18);
    } else if (me == 3) {
      EXPECT_NEAR(rec.emulated_s, 2e-9 + 4 / 512e9, 1e-18);
    }
  });
  for (auto& e : errors) EXPECT_EQ(e, "");
}

// Ranks 0 and 1 exchange a message that rank 2 takes no part in, then all three all-reduce:
// the merge pairs the all-reduces with each other, not rank 2's all-reduce with the send.
TEST(LinkStats, MergePairsRecordsByCallNotByPosition) {
  Mesh m = Mesh::parse("1x3");
  auto add = [&](LinkStats& s, OpKind kind, const char* algorithm, uint64_t bytes, double measured) {
    CollectiveRecord r;
    r.kind = kind;
    r.algorithm = algorithm;
    r.scope = "world";
    r.count = bytes / 4;
    r.measured_s = measured;
    Charges ch;
    ch.add(m, 0, 1, bytes);
    s.record(r, ch, 0);
  };
  LinkStats r0(m), r1(m), r2(m);
  add(r0, OpKind::sendrecv, "p2p", 100, 1.0);
  add(r0, OpKind::allreduce, "ring", 800, 2.0);
  add(r1, OpKind::sendrecv, "p2p", 100, 1.5);
  add(r1, OpKind::allreduce, "ring", 800, 3.0);
  add(r2, OpKind::allreduce, "ring", 800, 4.0);
  add(r2, OpKind::barrier, "ring", 0, 0.5);  // a call only rank 2 has recorded
  LinkStats all = r0;
  all.merge(r2);
  all.merge(r1);
  auto recs = all.records();
  ASSERT_EQ(recs.size(), 3u);
  EXPECT_EQ(recs[0].kind, OpKind::sendrecv);
  EXPECT_EQ(recs[0].payload_bytes, 200u);
  EXPECT_DOUBLE_EQ(recs[0].measured_s, 1.5);
  EXPECT_EQ(recs[1].kind, OpKind::allreduce);
  EXPECT_EQ(recs[1].payload_bytes, 3u * 800);
  EXPECT_DOUBLE_EQ(recs[1].measured_s, 4.0);
  EXPECT_EQ(recs[2].kind, OpKind::barrier);
  EXPECT_EQ(all.total_link_bytes(), 2u * 100 + 3u * 800);
}

}  // namespace
}  // namespace tessera::comms
