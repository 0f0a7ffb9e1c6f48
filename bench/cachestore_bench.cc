// cachestore_bench: Put and Get throughput and Lookup latency of the cache store,
// embedded and over gRPC on loopback, beside the raw sequential write and read
// bandwidth of the same disk measured in the same run. Writes the tables to
// docs/performance.md, section cachestore_bench (--out) and prints the command that reproduces them.
//
// "Cold" reads first fdatasync and posix_fadvise(DONTNEED) every file involved, so the
// bytes come from the device; "warm" reads repeat them from the page cache. Put does
// not fsync (StoreOptions.sync = false: durable against process crash; see
// docs/cachestore.md); the raw write is timed including one fdatasync at the end.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "bench/doc_section.h"
#include "cachestore/embedded_client.h"
#include "cachestore/key_scheme.h"
#include "cachestore/remote_client.h"
#include "cachestore/server.h"
#include "cachestore/store.h"
#include "common/flags.h"
#include "common/logging.h"

namespace kvspan::cachestore {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// fdatasync + drop from the page cache every regular file under `dir`.
void EvictFromPageCache(const std::string& dir) {
  for (const auto& entry : std::filesystem::recursive_directory_iterator(dir)) {
    if (!entry.is_regular_file()) continue;
    int fd = open(entry.path().c_str(), O_RDONLY);
    if (fd < 0) continue;
    fdatasync(fd);
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    close(fd);
  }
}

// The median of three runs of `fn` (the machine is shared; one run can be unlucky).
template <typename Fn>
double MedianOf3(Fn fn) {
  double v[3] = {fn(), fn(), fn()};
  std::sort(v, v + 3);
  return v[1];
}

struct RawDisk {
  double write_gbps = 0, read_cold_gbps = 0, read_warm_gbps = 0;
};

RawDisk MeasureRawDisk(const std::string& dir, int64_t total_bytes) {
  const std::string path = dir + "/raw.bin";
  const size_t block = 8 << 20;
  std::string buf(block, '\0');
  for (size_t i = 0; i < block; ++i) buf[i] = static_cast<char>(i * 2654435761u >> 24);
  RawDisk r;
  int fd = open(path.c_str(), O_CREAT | O_TRUNC | O_WRONLY, 0644);
  CHECK_GE(fd, 0);
  auto start = Clock::now();
  for (int64_t done = 0; done < total_bytes; done += block) {
    CHECK_EQ(write(fd, buf.data(), block), static_cast<ssize_t>(block));
  }
  fdatasync(fd);
  r.write_gbps = total_bytes / Seconds(start) / 1e9;
  close(fd);
  auto read_all = [&](bool cold) {
    int rfd = open(path.c_str(), O_RDONLY);
    if (cold) posix_fadvise(rfd, 0, 0, POSIX_FADV_DONTNEED);
    const auto t = Clock::now();
    int64_t got = 0;
    ssize_t n;
    while ((n = read(rfd, buf.data(), block)) > 0) got += n;
    close(rfd);
    return got / Seconds(t) / 1e9;
  };
  r.read_cold_gbps = MedianOf3([&] { return read_all(true); });
  r.read_warm_gbps = MedianOf3([&] { return read_all(false); });
  std::filesystem::remove(path);
  return r;
}

struct SizeResult {
  std::string label;
  int64_t value_bytes = 0;
  int num_values = 0;
  double put_gbps = 0, get_cold_gbps = 0, get_warm_gbps = 0, get_memory_gbps = 0;
  double rpc_put_gbps = 0, rpc_get_cold_gbps = 0, rpc_get_warm_gbps = 0;
};

std::unique_ptr<CacheStore> OpenOrDie(const std::string& path, int64_t memory_budget) {
  StoreOptions o;
  o.path = path;
  o.memory_budget_bytes = memory_budget;
  o.disk_budget_bytes = int64_t{64} << 30;
  o.max_value_bytes = int64_t{64} << 20;
  absl::StatusOr<std::unique_ptr<CacheStore>> s = CacheStore::Open(o);
  CHECK(s.ok()) << s.status();
  return std::move(*s);
}

SpanKey BenchKey(uint32_t i) {
  SpanKey k;
  k.bytes[0] = 0x5a;
  for (int j = 0; j < 4; ++j) k.bytes[12 + j] = static_cast<uint8_t>(i >> (8 * (3 - j)));
  return k;
}

// Puts num_values values through `client`; returns GB/s.
double PutAll(CacheClient& client, const std::string& payload_template, int num_values) {
  std::string payload = payload_template;
  const auto start = Clock::now();
  for (int i = 0; i < num_values; ++i) {
    std::memcpy(payload.data(), &i, sizeof(i));  // distinct values
    absl::Status s = client.Put(BenchKey(i), payload);
    CHECK(s.ok()) << s;
  }
  return static_cast<double>(payload.size()) * num_values / Seconds(start) / 1e9;
}

// Gets every value (checking its size); returns GB/s.
double GetAll(CacheClient& client, int64_t value_bytes, int num_values) {
  const auto start = Clock::now();
  for (int i = 0; i < num_values; ++i) {
    absl::StatusOr<std::optional<Value>> v = client.Get(BenchKey(i));
    CHECK(v.ok() && v->has_value() && static_cast<int64_t>((**v)->size()) == value_bytes)
        << "Get " << i << ": " << v.status();
  }
  return static_cast<double>(value_bytes) * num_values / Seconds(start) / 1e9;
}

SizeResult MeasureSize(const std::string& dir, const std::string& label, int64_t value_bytes,
                       int64_t total_bytes) {
  SizeResult r;
  r.label = label;
  r.value_bytes = value_bytes;
  r.num_values = static_cast<int>(std::max<int64_t>(8, total_bytes / value_bytes));
  std::string payload(value_bytes, '\0');
  for (int64_t i = 0; i < value_bytes; ++i) payload[i] = static_cast<char>((i * 7919) >> 3);

  const std::string db = dir + "/embedded";
  {
    std::shared_ptr<CacheStore> store = OpenOrDie(db, 0);
    EmbeddedCacheClient client(store);
    r.put_gbps = PutAll(client, payload, r.num_values);
  }
  {
    // Reopened: recovery moves the WAL into blob files; memory tier off: disk reads.
    std::shared_ptr<CacheStore> store = OpenOrDie(db, 0);
    EmbeddedCacheClient client(store);
    r.get_cold_gbps = MedianOf3([&] {
      EvictFromPageCache(db);
      return GetAll(client, value_bytes, r.num_values);
    });
    r.get_warm_gbps = MedianOf3([&] { return GetAll(client, value_bytes, r.num_values); });
  }
  {
    std::shared_ptr<CacheStore> store = OpenOrDie(db, int64_t{2} << 30);
    EmbeddedCacheClient client(store);
    GetAll(client, value_bytes, r.num_values);  // promote into memory
    r.get_memory_gbps = MedianOf3([&] { return GetAll(client, value_bytes, r.num_values); });
  }
  std::filesystem::remove_all(db);

  const std::string rdb = dir + "/remote";
  RemoteClientOptions ro;
  ro.timeout_ms = 60000;
  for (int phase = 0; phase < 2; ++phase) {
    std::shared_ptr<CacheStore> store = OpenOrDie(rdb, 0);
    absl::StatusOr<std::unique_ptr<CacheServer>> server = CacheServer::Start(store, ServerOptions());
    CHECK(server.ok()) << server.status();
    ro.target = (*server)->address();
    auto client = *RemoteCacheClient::Create(ro);
    if (phase == 0) {
      r.rpc_put_gbps = PutAll(*client, payload, r.num_values);
    } else {
      r.rpc_get_cold_gbps = MedianOf3([&] {
        EvictFromPageCache(rdb);
        return GetAll(*client, value_bytes, r.num_values);
      });
      r.rpc_get_warm_gbps = MedianOf3([&] { return GetAll(*client, value_bytes, r.num_values); });
    }
    client.reset();
    (*server)->Shutdown(0);
  }
  std::filesystem::remove_all(rdb);
  return r;
}

struct Latency {
  double p50_us = 0, p99_us = 0;
};

Latency Percentiles(std::vector<double> us) {
  std::sort(us.begin(), us.end());
  return Latency{us[us.size() / 2], us[std::min(us.size() - 1, us.size() * 99 / 100)]};
}

struct LookupResult {
  int64_t num_entries = 0;
  int chain_length = 0;
  Latency embedded, remote;
};

LookupResult MeasureLookup(const std::string& dir, int num_entries, int chain_length,
                           int num_lookups) {
  LookupResult r;
  r.num_entries = num_entries;
  r.chain_length = chain_length;
  const std::string db = dir + "/lookup";
  std::shared_ptr<CacheStore> store = OpenOrDie(db, int64_t{64} << 20);
  EmbeddedCacheClient embedded(store);
  const std::string small(256, 'v');
  for (int i = 0; i < num_entries; ++i) CHECK(embedded.Put(BenchKey(i), small).ok());
  absl::StatusOr<std::unique_ptr<CacheServer>> server = CacheServer::Start(store, ServerOptions());
  CHECK(server.ok()) << server.status();
  RemoteClientOptions ro;
  ro.target = (*server)->address();
  auto remote = *RemoteCacheClient::Create(ro);
  SpanKey ns;
  ns.bytes[0] = 1;
  for (int which = 0; which < 2; ++which) {
    CacheClient& client = which == 0 ? static_cast<CacheClient&>(embedded) : *remote;
    const int n = which == 0 ? num_lookups : num_lookups / 4;
    std::vector<double> us;
    us.reserve(n);
    std::vector<SpanKey> chain(chain_length);
    for (int i = 0; i < n; ++i) {
      const int base = (i * 7919) % (num_entries - chain_length);
      for (int j = 0; j < chain_length; ++j) chain[j] = BenchKey(base + j);
      const auto start = Clock::now();
      absl::StatusOr<size_t> got = client.Lookup(ns, chain);
      us.push_back(Seconds(start) * 1e6);
      CHECK(got.ok() && *got == static_cast<size_t>(chain_length)) << got.status();
    }
    (which == 0 ? r.embedded : r.remote) = Percentiles(us);
  }
  remote.reset();
  (*server)->Shutdown(0);
  server->reset();
  store.reset();
  std::filesystem::remove_all(db);
  return r;
}

int Main(int argc, char** argv) {
  std::string dir = (std::filesystem::temp_directory_path() / "kvspan_cachestore_bench").string();
  std::string out = "docs/performance.md";
  int64_t total_mib = 256;
  int64_t raw_mib = 1024;
  int lookups = 20000;
  FlagSet flags("cachestore_bench", "Cache store throughput and latency vs the raw disk.");
  flags.Add("dir", &dir, "scratch directory (on the disk to measure); removed afterwards");
  flags.Add("out", &out, "markdown file to write (empty: stdout only)");
  flags.Add("total-mib", &total_mib, "bytes of values per span size and mode, MiB");
  flags.Add("raw-mib", &raw_mib, "size of the raw sequential write/read file, MiB");
  flags.Add("lookups", &lookups, "embedded Lookups timed (remote: a quarter)");
  absl::Status parsed = flags.Parse(argc, argv);
  if (flags.help_requested() || !parsed.ok()) {
    std::fprintf(parsed.ok() ? stdout : stderr, "%s\n%s", std::string(parsed.message()).c_str(),
                 flags.Usage().c_str());
    return parsed.ok() ? 0 : 2;
  }
  const std::string command = bench::CommandLine(argc, argv);
  std::printf("reproduce with: %s\n", command.c_str());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const std::string load_before = bench::LoadAverage();

  const RawDisk raw = MeasureRawDisk(dir, raw_mib << 20);
  std::printf("raw disk: write %.2f GB/s, read cold %.2f GB/s, warm %.2f GB/s\n",
              raw.write_gbps, raw.read_cold_gbps, raw.read_warm_gbps);
  struct Size {
    const char* label;
    int64_t bytes;
  };
  // Shipped model (tools/model.py defaults: 4 layers, 2 KV heads, head_dim 32): 1 KiB per
  // token of K+V in bf16, 64 KiB per 64-token span; int4 a quarter of that. 8B model
  // (Llama-3-8B geometry: 32 layers, 8 KV heads, head_dim 128): 128 KiB per token in bf16.
  const Size sizes[] = {{"shipped model, int4 (16 KiB)", 16 << 10},
                        {"shipped model, bf16 (64 KiB)", 64 << 10},
                        {"8B model, int4 (2 MiB)", 2 << 20},
                        {"8B model, bf16 (8 MiB)", 8 << 20}};
  std::vector<SizeResult> results;
  for (const Size& s : sizes) {
    results.push_back(MeasureSize(dir, s.label, s.bytes, total_mib << 20));
    const SizeResult& r = results.back();
    std::printf("%-30s put %.2f get cold %.2f warm %.2f mem %.2f | rpc put %.2f get cold %.2f warm %.2f GB/s\n",
                r.label.c_str(), r.put_gbps, r.get_cold_gbps, r.get_warm_gbps, r.get_memory_gbps,
                r.rpc_put_gbps, r.rpc_get_cold_gbps, r.rpc_get_warm_gbps);
  }
  const LookupResult lookup = MeasureLookup(dir, 20000, 32, lookups);
  std::printf("lookup of %d keys among %lld: embedded p50 %.1f us p99 %.1f us; grpc p50 %.1f us p99 %.1f us\n",
              lookup.chain_length, static_cast<long long>(lookup.num_entries), lookup.embedded.p50_us,
              lookup.embedded.p99_us, lookup.remote.p50_us, lookup.remote.p99_us);
  std::filesystem::remove_all(dir);

  std::string md = "## Cache store (issue 4)\n\n";
  absl::StrAppend(&md, "Generated by `bench/cachestore_bench.cc`. Reproduce (from the repo root, "
                       "after building the `cachestore_bench` target):\n\n```\n", command, "\n```\n\n");
  absl::StrAppendFormat(&md, "Machine: %s, %u cores; scratch directory `%s`; 1-minute load "
                        "average %s at the start and %s at the end (the machine is shared: "
                        "other work competes for CPU and disk). GB/s = 10^9 bytes/s. "
                        "%lld MiB of values per span size and mode.\n\n",
                        bench::CpuModel(), std::thread::hardware_concurrency(), dir, load_before,
                        bench::LoadAverage(), static_cast<long long>(total_mib));
  absl::StrAppend(&md, "### Raw disk (same directory, same run)\n\n| sequential write + fdatasync | read, cold | read, warm (page cache) |\n|---|---|---|\n");
  absl::StrAppendFormat(&md, "| %.2f GB/s | %.2f GB/s | %.2f GB/s |\n\n", raw.write_gbps,
                        raw.read_cold_gbps, raw.read_warm_gbps);
  absl::StrAppend(&md, "### Put and Get throughput\n\n"
                       "Put: WAL without fsync (survives SIGKILL, not power loss). Get cold: the "
                       "store's files evicted from the page cache first; warm: read again; memory: "
                       "served by the memory tier. Reads (raw and Get) are the median of 3 passes. "
                       "Every Get verifies the XXH3-64 checksum; over gRPC "
                       "the client verifies it again. Gets read the keys in the order they were "
                       "put (the spans of one prompt are put together, so they lie in order in a "
                       "blob file and kernel readahead helps; scattered reads of small spans "
                       "would be slower). gRPC: one loopback connection, 1 MiB chunks, client "
                       "and server in this process.\n\n"
                       "| span | values | Put | Get cold | Get warm | Get memory | gRPC Put | gRPC Get cold | gRPC Get warm | Get cold / raw cold read |\n"
                       "|---|---|---|---|---|---|---|---|---|---|\n");
  for (const SizeResult& r : results) {
    absl::StrAppendFormat(&md, "| %s | %d | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.0f%% |\n",
                          r.label, r.num_values, r.put_gbps, r.get_cold_gbps, r.get_warm_gbps,
                          r.get_memory_gbps, r.rpc_put_gbps, r.rpc_get_cold_gbps,
                          r.rpc_get_warm_gbps, 100.0 * r.get_cold_gbps / raw.read_cold_gbps);
  }
  absl::StrAppend(&md, "\n(all throughput columns in GB/s)\n\n### Lookup latency\n\n");
  absl::StrAppendFormat(&md, "A chain of %d span keys (a %d-token prompt at 64 tokens per span), all present, "
                        "in a store of %lld entries.\n\n| client | p50 | p99 |\n|---|---|---|\n",
                        lookup.chain_length, lookup.chain_length * 64,
                        static_cast<long long>(lookup.num_entries));
  absl::StrAppendFormat(&md, "| embedded (%d lookups) | %.1f µs | %.1f µs |\n", lookups,
                        lookup.embedded.p50_us, lookup.embedded.p99_us);
  absl::StrAppendFormat(&md, "| gRPC, loopback (%d lookups) | %.1f µs | %.1f µs |\n\n", lookups / 4,
                        lookup.remote.p50_us, lookup.remote.p99_us);
  absl::StrAppend(&md, "Targets (issue 4): Get of large spans at >= 70% of the raw read bandwidth; "
                       "embedded Lookup p99 under 1 ms.\n");
  if (!out.empty()) {
    absl::Status s = bench::WriteDocSection(out, "cachestore_bench", md);
    if (!s.ok()) {
      std::fprintf(stderr, "writing %s: %s\n", out.c_str(), std::string(s.message()).c_str());
      return 1;
    }
    std::printf("wrote %s\n", out.c_str());
  }
  std::printf("\n%s", md.c_str());
  return 0;
}

}  // namespace
}  // namespace kvspan::cachestore

int main(int argc, char** argv) {
  kvspan::InitLogging(argv[0]);
  return kvspan::cachestore::Main(argc, argv);
}
