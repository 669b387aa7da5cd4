#include <tessera/comms/link_stats.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

namespace tessera::comms {

const char* op_kind_name(OpKind k) {
  static const char* names[kNumOpKinds] = {"allreduce", "reduce_scatter", "allgather", "broadcast",
                                           "sendrecv",  "barrier",        "halo",      "internal"};
  return names[static_cast<int>(k)];
}

void Charges::add(const Mesh& mesh, int src, int dst, uint64_t bytes) {
  std::vector<Link> route = mesh.route(src, dst);
  std::lock_guard<std::mutex> lock(mu_);
  payload_ += bytes;
  ++messages_;
  for (const Link& l : route) links_[l.id()] += bytes;
}

LinkStats::LinkStats(Mesh mesh) : mesh_(std::move(mesh)) {}

LinkStats::LinkStats(const LinkStats& o) : mesh_(o.mesh_) {
  std::lock_guard<std::mutex> lock(o.mu_);
  table_ = o.table_;
  records_ = o.records_;
}

LinkStats& LinkStats::operator=(const LinkStats& o) {
  if (this == &o) return *this;
  std::scoped_lock lock(mu_, o.mu_);
  mesh_ = o.mesh_;
  table_ = o.table_;
  records_ = o.records_;
  return *this;
}

CollectiveRecord LinkStats::record(CollectiveRecord rec, const Charges& charges, double latency_s) {
  rec.payload_bytes = charges.payload_bytes();
  rec.messages = charges.messages();
  rec.link_bytes = 0;
  double busy = 0;
  for (const auto& [id, b] : charges.link_bytes()) {
    rec.link_bytes += b;
    double t = static_cast<double>(b) / mesh_.link_spec(mesh_.link(id)).bandwidth;
    if (t > busy || (t == busy && (rec.busiest_link < 0 || id < rec.busiest_link))) {
      busy = t;
      rec.busiest_link = id;
      rec.busiest_bytes = b;
    }
  }
  rec.emulated_s = latency_s + busy;
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [id, b] : charges.link_bytes()) table_[id][static_cast<int>(rec.kind)] += b;
  records_.push_back(rec);
  return rec;
}

uint64_t LinkStats::bytes(int id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = table_.find(id);
  if (it == table_.end()) return 0;
  uint64_t s = 0;
  for (uint64_t b : it->second) s += b;
  return s;
}

uint64_t LinkStats::bytes(int id, OpKind k) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = table_.find(id);
  return it == table_.end() ? 0 : it->second[static_cast<int>(k)];
}

uint64_t LinkStats::total_link_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  uint64_t s = 0;
  for (const auto& [id, pk] : table_)
    for (uint64_t b : pk) s += b;
  return s;
}

std::vector<CollectiveRecord> LinkStats::records() const {
  std::lock_guard<std::mutex> lock(mu_);
  return records_;
}

double LinkStats::total_emulated_s() const {
  std::lock_guard<std::mutex> lock(mu_);
  double t = 0;
  for (const auto& r : records_) t += r.emulated_s;
  return t;
}

std::vector<std::pair<int, uint64_t>> LinkStats::busiest(int n) const {
  std::vector<std::pair<int, uint64_t>> v;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [id, pk] : table_) {
      uint64_t s = 0;
      for (uint64_t b : pk) s += b;
      if (s) v.emplace_back(id, s);
    }
  }
  std::sort(v.begin(), v.end(), [](const auto& a, const auto& b) {
    return a.second != b.second ? a.second > b.second : a.first < b.first;
  });
  if (n >= 0 && v.size() > static_cast<size_t>(n)) v.resize(static_cast<size_t>(n));
  return v;
}

namespace {
std::string human_bytes(double b) {
  const char* u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int i = 0;
  while (b >= 1024 && i < 4) {
    b /= 1024;
    ++i;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, i ? "%.2f %s" : "%.0f %s", b, u[i]);
  return buf;
}
std::string human_time(double s) {
  char buf[32];
  if (s >= 1) std::snprintf(buf, sizeof buf, "%.3f s", s);
  else if (s >= 1e-3) std::snprintf(buf, sizeof buf, "%.3f ms", s * 1e3);
  else if (s >= 1e-6) std::snprintf(buf, sizeof buf, "%.3f us", s * 1e6);
  else std::snprintf(buf, sizeof buf, "%.1f ns", s * 1e9);
  return buf;
}
}  // namespace

std::string LinkStats::top_links(int n) const {
  auto top = busiest(n);
  uint64_t total = total_link_bytes();
  std::ostringstream os;
  char line[256];
  std::snprintf(line, sizeof line, "busiest links of mesh %s (%s), %s charged in all\n",
                mesh_.name().c_str(), mesh_.shape_string().c_str(),
                human_bytes(static_cast<double>(total)).c_str());
  os << line;
  std::snprintf(line, sizeof line, "  %-24s %-9s %14s %12s %7s\n", "link", "boundary", "bytes",
                "busy time", "share");
  os << line;
  for (const auto& [id, b] : top) {
    Link l = mesh_.link(id);
    std::snprintf(line, sizeof line, "  %-24s %-9s %14s %12s %6.2f%%\n", mesh_.link_name(l).c_str(),
                  boundary_name(mesh_.boundary(l)), human_bytes(static_cast<double>(b)).c_str(),
                  human_time(static_cast<double>(b) / mesh_.link_spec(l).bandwidth).c_str(),
                  total ? 100.0 * static_cast<double>(b) / static_cast<double>(total) : 0.0);
    os << line;
  }
  if (top.empty()) os << "  (no traffic)\n";
  return os.str();
}

std::string LinkStats::summary() const {
  auto recs = records();
  struct Agg {
    int calls = 0;
    uint64_t bytes = 0;
    double emulated = 0, measured = 0;
  } agg[kNumOpKinds];
  for (const auto& r : recs) {
    Agg& a = agg[static_cast<int>(r.kind)];
    ++a.calls;
    a.bytes += r.payload_bytes;
    a.emulated += r.emulated_s;
    a.measured += r.measured_s;
  }
  std::ostringstream os;
  char line[256];
  std::snprintf(line, sizeof line, "  %-15s %6s %14s %14s %14s\n", "collective", "calls", "bytes sent",
                "emulated", "measured");
  os << line;
  for (int k = 0; k < kNumOpKinds; ++k) {
    if (!agg[k].calls) continue;
    std::snprintf(line, sizeof line, "  %-15s %6d %14s %14s %14s\n",
                  op_kind_name(static_cast<OpKind>(k)), agg[k].calls,
                  human_bytes(static_cast<double>(agg[k].bytes)).c_str(),
                  human_time(agg[k].emulated).c_str(), human_time(agg[k].measured).c_str());
    os << line;
  }
  return os.str();
}

void LinkStats::write_csv(const std::string& path, bool include_idle) const {
  std::ofstream f(path + ".tmp", std::ios::trunc);
  if (!f) throw IoError("cannot write link table '" + path + "': " + std::strerror(errno));
  f << "link_id,from_row,from_col,to_row,to_col,direction,boundary,bandwidth_Bps,latency_s,bytes";
  for (int k = 0; k < kNumOpKinds; ++k) f << ",bytes_" << op_kind_name(static_cast<OpKind>(k));
  f << ",busy_s\n";
  std::vector<int> ids;
  std::unordered_map<int, PerKind> table;
  {
    std::lock_guard<std::mutex> lock(mu_);
    table = table_;
  }
  if (include_idle) {
    for (int id = 0; id < mesh_.num_link_ids(); ++id)
      if (mesh_.link_exists(id)) ids.push_back(id);
  } else {
    for (const auto& [id, pk] : table) ids.push_back(id);
    std::sort(ids.begin(), ids.end());
  }
  for (int id : ids) {
    Link l = mesh_.link(id);
    Coord a = mesh_.coord(l.from), b = mesh_.coord(l.to);
    const LinkSpec& spec = mesh_.link_spec(l);
    PerKind pk{};
    if (auto it = table.find(id); it != table.end()) pk = it->second;
    uint64_t total = 0;
    for (uint64_t v : pk) total += v;
    f << id << ',' << a.row << ',' << a.col << ',' << b.row << ',' << b.col << ','
      << direction_name(l.dir) << ',' << boundary_name(mesh_.boundary(l)) << ',' << spec.bandwidth
      << ',' << spec.latency << ',' << total;
    for (uint64_t v : pk) f << ',' << v;
    f << ',' << static_cast<double>(total) / spec.bandwidth << '\n';
  }
  f.close();
  if (!f || std::rename((path + ".tmp").c_str(), path.c_str()) != 0) {
    throw IoError("cannot write link table '" + path + "': " + std::strerror(errno));
  }
}

void LinkStats::merge(const LinkStats& o) {
  if (&o == this) return;
  std::scoped_lock lock(mu_, o.mu_);
  for (const auto& [id, pk] : o.table_) {
    auto& mine = table_[id];
    for (int k = 0; k < kNumOpKinds; ++k) mine[k] += pk[k];
  }
  auto same_call = [](const CollectiveRecord& a, const CollectiveRecord& b) {
    return a.kind == b.kind && a.algorithm == b.algorithm && a.scope == b.scope && a.count == b.count &&
           a.dtype == b.dtype;
  };
  // A partner is looked for among the next kLookahead records only, so that ranks whose calls
  // differ a lot (point to point between a few of them) do not make this quadratic.
  constexpr size_t kLookahead = 64;
  size_t next = 0;  // records_ before this are paired or inserted
  for (const CollectiveRecord& r : o.records_) {
    size_t i = next;
    const size_t end = std::min(records_.size(), next + kLookahead);
    while (i < end && !same_call(records_[i], r)) ++i;
    if (i == end) {
      records_.insert(records_.begin() + static_cast<std::ptrdiff_t>(next), r);
      ++next;
      continue;
    }
    next = i + 1;
    CollectiveRecord& m = records_[i];
    m.payload_bytes += r.payload_bytes;
    m.link_bytes += r.link_bytes;
    m.messages += r.messages;
    if (r.busiest_bytes > m.busiest_bytes) {
      m.busiest_bytes = r.busiest_bytes;
      m.busiest_link = r.busiest_link;
    }
    m.emulated_s = std::max(m.emulated_s, r.emulated_s);
    m.measured_s = std::max(m.measured_s, r.measured_s);
  }
}

// ---- a small binary format for gathering stats across ranks --------------------------------

namespace {
struct Writer {
  std::string out;
  template <typename T>
  void put(T v) { out.append(reinterpret_cast<const char*>(&v), sizeof v); }
  void str(const std::string& s) {
    put<uint32_t>(static_cast<uint32_t>(s.size()));
    out += s;
  }
};
struct Reader {
  const std::string& in;
  size_t pos = 0;
  template <typename T>
  T get() {
    if (pos + sizeof(T) > in.size()) throw RemoteError("link stats from a peer are truncated");
    T v;
    std::memcpy(&v, in.data() + pos, sizeof v);
    pos += sizeof v;
    return v;
  }
  std::string str() {
    auto n = get<uint32_t>();
    if (pos + n > in.size()) throw RemoteError("link stats from a peer are truncated");
    std::string s = in.substr(pos, n);
    pos += n;
    return s;
  }
};
constexpr uint32_t kStatsMagic = 0x54534c4b;  // "KLST"
}  // namespace

std::string LinkStats::serialize() const {
  std::lock_guard<std::mutex> lock(mu_);
  Writer w;
  w.put(kStatsMagic);
  w.put<uint64_t>(table_.size());
  for (const auto& [id, pk] : table_) {
    w.put<int32_t>(id);
    for (uint64_t b : pk) w.put(b);
  }
  w.put<uint64_t>(records_.size());
  for (const auto& r : records_) {
    w.put<uint8_t>(static_cast<uint8_t>(r.kind));
    w.str(r.algorithm);
    w.str(r.scope);
    w.put(r.count);
    w.put<uint8_t>(static_cast<uint8_t>(r.dtype));
    w.put(r.payload_bytes);
    w.put(r.link_bytes);
    w.put(r.messages);
    w.put<int32_t>(r.busiest_link);
    w.put(r.busiest_bytes);
    w.put(r.emulated_s);
    w.put(r.measured_s);
  }
  return std::move(w.out);
}

LinkStats LinkStats::deserialize(const Mesh& mesh, const std::string& bytes) {
  LinkStats s(mesh);
  Reader r{bytes};
  if (r.get<uint32_t>() != kStatsMagic) throw RemoteError("link stats from a peer: bad magic");
  auto n = r.get<uint64_t>();
  for (uint64_t i = 0; i < n; ++i) {
    int id = r.get<int32_t>();
    if (!mesh.link_exists(id)) throw RemoteError("link stats from a peer name link id " + std::to_string(id) + ", which this mesh does not have");
    PerKind pk;
    for (auto& b : pk) b = r.get<uint64_t>();
    s.table_[id] = pk;
  }
  auto m = r.get<uint64_t>();
  for (uint64_t i = 0; i < m; ++i) {
    CollectiveRecord c;
    auto kind = r.get<uint8_t>();
    if (kind >= kNumOpKinds) throw RemoteError("link stats from a peer: bad collective kind");
    c.kind = static_cast<OpKind>(kind);
    c.algorithm = r.str();
    c.scope = r.str();
    c.count = r.get<uint64_t>();
    c.dtype = dtype_from_id(r.get<uint8_t>());
    c.payload_bytes = r.get<uint64_t>();
    c.link_bytes = r.get<uint64_t>();
    c.messages = r.get<uint64_t>();
    c.busiest_link = r.get<int32_t>();
    c.busiest_bytes = r.get<uint64_t>();
    c.emulated_s = r.get<double>();
    c.measured_s = r.get<double>();
    s.records_.push_back(std::move(c));
  }
  return s;
}

void LinkStats::clear() {
  std::lock_guard<std::mutex> lock(mu_);
  table_.clear();
  records_.clear();
}

}  // namespace tessera::comms
