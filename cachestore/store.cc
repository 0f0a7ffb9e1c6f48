#include "cachestore/store.h"

#include <algorithm>
#include <filesystem>
#include <utility>
#include <vector>

#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <rocksdb/slice.h>
#include <rocksdb/write_batch.h>

#include "absl/strings/str_cat.h"
#include "cachestore/key_scheme.h"
#include "common/logging.h"
#include "common/status_macros.h"

namespace kvspan::cachestore {
namespace {

using internal::EntryMeta;
using internal::MemoryTier;
using internal::DecodeEntryMeta;
using internal::EncodeEntryMeta;

constexpr char kMetaColumnFamily[] = "meta";

absl::Status FromRocks(const rocksdb::Status& s, absl::string_view what) {
  if (s.ok()) return absl::OkStatus();
  return absl::InternalError(absl::StrCat("rocksdb ", what, ": ", s.ToString()));
}

rocksdb::Slice ToSlice(absl::string_view v) { return rocksdb::Slice(v.data(), v.size()); }

}  // namespace

CacheStore::CacheStore(const StoreOptions& options)
    : options_(options), memory_(options.memory_budget_bytes) {}

absl::StatusOr<std::unique_ptr<CacheStore>> CacheStore::Open(const StoreOptions& options) {
  if (options.path.empty()) return absl::InvalidArgumentError("StoreOptions.path is empty");
  if (options.memory_budget_bytes < 0 || options.disk_budget_bytes <= 0 ||
      options.max_value_bytes <= 0 || options.min_blob_size_bytes < 0) {
    return absl::InvalidArgumentError(
        "StoreOptions: budgets and max_value_bytes must be positive");
  }
  std::unique_ptr<CacheStore> store(new CacheStore(options));
  RETURN_IF_ERROR(store->OpenDb());
  RETURN_IF_ERROR(store->LoadIndex());
  return store;
}

absl::Status CacheStore::OpenDb() {
  std::error_code ec;
  std::filesystem::create_directories(options_.path, ec);
  if (ec) {
    return absl::InternalError(absl::StrCat("cannot create ", options_.path, ": ", ec.message()));
  }
  rocksdb::DBOptions db_options;
  db_options.create_if_missing = true;
  db_options.create_missing_column_families = true;
  db_options.max_background_jobs = 2;
  // Values are read whole (one pread of up to tens of MiB): let the kernel read ahead
  // instead of RocksDB's default FADV_RANDOM, which is tuned for small SST blocks.
  db_options.advise_random_on_open = false;

  rocksdb::ColumnFamilyOptions data_options;
  data_options.compression = rocksdb::kNoCompression;  // the SSTs hold keys and blob refs
  data_options.enable_blob_files = true;
  data_options.min_blob_size = static_cast<uint64_t>(options_.min_blob_size_bytes);
  data_options.blob_compression_type =
      options_.blob_compression ? rocksdb::kZSTD : rocksdb::kNoCompression;
  data_options.enable_blob_garbage_collection = true;
  data_options.write_buffer_size = 64 << 20;
  rocksdb::ColumnFamilyOptions meta_options;

  std::vector<rocksdb::ColumnFamilyDescriptor> descriptors = {
      {rocksdb::kDefaultColumnFamilyName, data_options}, {kMetaColumnFamily, meta_options}};
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* db = nullptr;
  RETURN_IF_ERROR(FromRocks(rocksdb::DB::Open(db_options, options_.path, descriptors, &handles, &db),
                            absl::StrCat("open ", options_.path)));
  db_.reset(db);
  data_cf_ = handles[0];
  meta_cf_ = handles[1];
  return absl::OkStatus();
}

absl::Status CacheStore::LoadIndex() {
  std::vector<std::pair<SpanKey, EntryMeta>> entries;
  std::vector<SpanKey> malformed;
  {
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), meta_cf_));
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      absl::string_view raw_key(it->key().data(), it->key().size());
      absl::StatusOr<SpanKey> key = SpanKey::FromBytes(raw_key);
      absl::StatusOr<EntryMeta> meta =
          DecodeEntryMeta(absl::string_view(it->value().data(), it->value().size()));
      if (!key.ok()) continue;  // not ours; never written by this store
      if (!meta.ok()) {
        malformed.push_back(*key);
        continue;
      }
      entries.emplace_back(*key, *meta);
    }
    RETURN_IF_ERROR(FromRocks(it->status(), "scan metadata"));
  }
  std::sort(entries.begin(), entries.end(),
            [](const auto& a, const auto& b) { return a.second.access_tick < b.second.access_tick; });
  uint64_t max_tick = 0;
  std::vector<SpanKey> pinned;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [key, meta] : entries) {
      internal::LruIndex::Entry& e = disk_.Upsert(key, meta.record_bytes, meta.access_tick);
      e.persisted_tick = meta.access_tick;
      if (meta.pinned) {
        disk_.SetPinned(key, true);
        pinned.push_back(key);
      }
      max_tick = std::max(max_tick, meta.access_tick);
    }
  }
  next_tick_.store(max_tick + 1);
  for (const SpanKey& key : malformed) {
    std::unique_lock<std::shared_mutex> stripe(Stripe(key));
    DropCorrupt(key);
  }
  // Pinned values live in the memory tier (verified now, so a corrupt one is dropped).
  for (const SpanKey& key : pinned) {
    std::unique_lock<std::shared_mutex> stripe(Stripe(key));
    absl::StatusOr<std::optional<MemoryTier::Item>> item = ReadVerified(key);
    if (!item.ok() && item.status().code() != absl::StatusCode::kDataLoss) return item.status();
    if (!item.ok() || !item->has_value()) {
      DropCorrupt(key);
      continue;
    }
    std::lock_guard<std::mutex> lock(mu_);
    int64_t evicted = 0;
    if (!memory_.Insert(key, **item, /*pinned=*/true, NextTick(), &evicted)) {
      LOG(WARNING) << "cachestore: pinned value " << key.ToHex()
                   << " does not fit the memory budget; it stays on disk only";
    }
  }
  EvictDiskOverBudget();
  return absl::OkStatus();
}

CacheStore::~CacheStore() {
  if (db_ == nullptr) return;
  PersistAccessTicks();
  if (data_cf_ != nullptr) db_->DestroyColumnFamilyHandle(data_cf_);
  if (meta_cf_ != nullptr) db_->DestroyColumnFamilyHandle(meta_cf_);
  rocksdb::Status s = db_->Close();
  if (!s.ok()) LOG(ERROR) << "cachestore: close: " << s.ToString();
}

void CacheStore::PersistAccessTicks() {
  rocksdb::WriteBatch batch;
  {
    std::lock_guard<std::mutex> lock(mu_);
    disk_.ForEach([&](const SpanKey& key, const internal::LruIndex::Entry& e) {
      if (e.access_tick == e.persisted_tick) return;
      EntryMeta meta{e.size_bytes, e.access_tick, e.pinned};
      batch.Put(meta_cf_, ToSlice(key.AsStringView()), EncodeEntryMeta(meta));
    });
  }
  if (batch.Count() == 0) return;
  rocksdb::Status s = WriteToDb(rocksdb::WriteOptions(), &batch);
  if (!s.ok()) LOG(ERROR) << "cachestore: persisting access order: " << s.ToString();
}

absl::StatusOr<size_t> CacheStore::Lookup(const SpanKey& namespace_key,
                                          absl::Span<const SpanKey> chain) {
  RETURN_IF_ERROR(ValidateLookupRequest(namespace_key, chain.size()));
  std::lock_guard<std::mutex> lock(mu_);
  size_t n = 0;
  while (n < chain.size() && disk_.Contains(chain[n])) ++n;
  return n;
}

absl::StatusOr<std::optional<MemoryTier::Item>> CacheStore::ReadVerified(const SpanKey& key) {
  std::string record;
  rocksdb::ReadOptions ro;
  // Our record carries its own XXH3-64, verified below; RocksDB's per-block/blob CRC32c
  // over the same bytes would be a second pass (software CRC in Debian's build).
  ro.verify_checksums = false;
  rocksdb::Status s = db_->Get(ro, data_cf_, ToSlice(key.AsStringView()), &record);
  if (s.IsNotFound()) return std::nullopt;
  RETURN_IF_ERROR(FromRocks(s, "get"));
  ASSIGN_OR_RETURN(internal::RecordView view, internal::ParseRecord(record));
  MemoryTier::Item item;
  item.checksum = view.checksum;
  record.resize(view.payload.size());  // drop the trailer: no copy of the payload
  item.value = std::make_shared<const std::string>(std::move(record));
  return item;
}

rocksdb::Status CacheStore::WriteToDb(const rocksdb::WriteOptions& options,
                                      rocksdb::WriteBatch* batch) {
#if defined(__SANITIZE_THREAD__)
  // Debian's RocksDB is not built with ThreadSanitizer: in a write group the leader
  // thread writes the followers' batches, synchronized by atomics TSAN cannot see, which
  // it would report as races in our callers. Under TSAN only, one write at a time, so
  // the tool checks our locking rather than RocksDB's.
  std::lock_guard<std::mutex> lock(tsan_write_mu_);
#endif
  return db_->Write(options, batch);
}

absl::Status CacheStore::DeleteFromDb(const SpanKey& key) {
  rocksdb::WriteBatch batch;
  batch.Delete(data_cf_, ToSlice(key.AsStringView()));
  batch.Delete(meta_cf_, ToSlice(key.AsStringView()));
  rocksdb::WriteOptions wo;
  wo.sync = options_.sync;
  return FromRocks(WriteToDb(wo, &batch), "delete");
}

void CacheStore::DropCorrupt(const SpanKey& key) {
  absl::Status s = DeleteFromDb(key);
  if (!s.ok()) LOG(ERROR) << "cachestore: deleting corrupt " << key.ToHex() << ": " << s;
  std::lock_guard<std::mutex> lock(mu_);
  disk_.Erase(key);
  memory_.Erase(key);
  ++counters_.checksum_failures;
  LOG(WARNING) << "cachestore: value " << key.ToHex() << " failed its checksum; deleted";
}

absl::StatusOr<std::optional<Value>> CacheStore::Get(const SpanKey& key) {
  const uint64_t tick = NextTick();
  std::optional<MemoryTier::Item> item;
  {
    std::lock_guard<std::mutex> lock(mu_);
    item = memory_.Get(key, tick);
    if (item.has_value()) disk_.Touch(key, tick);
  }
  if (item.has_value()) {
    if (ValueChecksum(*item->value) == item->checksum) {
      std::lock_guard<std::mutex> lock(mu_);
      ++counters_.memory_hits;
      return item->value;
    }
    // The memory copy went bad (it was verified when it came in): drop it, use disk.
    std::lock_guard<std::mutex> lock(mu_);
    memory_.Erase(key);
    ++counters_.checksum_failures;
  }
  {
    std::shared_lock<std::shared_mutex> stripe(Stripe(key));
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!disk_.Contains(key)) {
        ++counters_.misses;
        return std::nullopt;
      }
    }
    absl::StatusOr<std::optional<MemoryTier::Item>> read = ReadVerified(key);
    if (read.ok()) {
      std::lock_guard<std::mutex> lock(mu_);
      if (!read->has_value()) {
        ++counters_.misses;
        return std::nullopt;
      }
      ++counters_.disk_hits;
      disk_.Touch(key, tick);
      const internal::LruIndex::Entry* e = disk_.Find(key);
      int64_t evicted = 0;
      memory_.Insert(key, **read, e != nullptr && e->pinned, tick, &evicted);
      counters_.memory_evictions += evicted;
      return (*read)->value;
    }
    if (read.status().code() != absl::StatusCode::kDataLoss) return read.status();
  }
  {
    // Corrupt: check again holding the key exclusively (a concurrent Put may have
    // replaced the value), then delete it.
    std::unique_lock<std::shared_mutex> stripe(Stripe(key));
    absl::StatusOr<std::optional<MemoryTier::Item>> again = ReadVerified(key);
    if (again.status().code() == absl::StatusCode::kDataLoss) DropCorrupt(key);
  }
  std::lock_guard<std::mutex> lock(mu_);
  ++counters_.misses;
  return std::nullopt;
}

absl::Status CacheStore::Put(const SpanKey& key, absl::string_view payload, uint64_t checksum) {
  if (payload.empty()) return absl::InvalidArgumentError("Put of an empty value");
  if (static_cast<int64_t>(payload.size()) > options_.max_value_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat("value of ", payload.size(),
                                                     " bytes is over the limit of ",
                                                     options_.max_value_bytes));
  }
  if (ValueChecksum(payload) != checksum) {
    return absl::DataLossError(
        absl::StrCat("value for ", key.ToHex(), " does not match its checksum; not stored"));
  }
  const int64_t record_bytes = static_cast<int64_t>(payload.size() + internal::kRecordTrailerBytes);
  Value value;
  if (static_cast<int64_t>(payload.size()) <= options_.memory_budget_bytes) {
    value = std::make_shared<const std::string>(payload);
  }
  {
    std::unique_lock<std::shared_mutex> stripe(Stripe(key));
    const uint64_t tick = NextTick();
    bool pinned = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      const internal::LruIndex::Entry* e = disk_.Find(key);
      pinned = e != nullptr && e->pinned;
      const int64_t pinned_other = disk_.bytes_pinned() - (pinned ? e->size_bytes : 0);
      if (pinned_other + record_bytes > options_.disk_budget_bytes) {
        return absl::ResourceExhaustedError(absl::StrCat(
            "disk budget of ", options_.disk_budget_bytes, " bytes cannot hold ", record_bytes,
            " more bytes: ", disk_.bytes_pinned(), " bytes are pinned"));
      }
    }
    const std::string trailer = internal::EncodeRecordTrailer(payload.size(), checksum);
    const rocksdb::Slice key_slice = ToSlice(key.AsStringView());
    const rocksdb::Slice value_parts[2] = {ToSlice(payload), ToSlice(trailer)};
    rocksdb::WriteBatch batch;
    RETURN_IF_ERROR(FromRocks(batch.Put(data_cf_, rocksdb::SliceParts(&key_slice, 1),
                                        rocksdb::SliceParts(value_parts, 2)),
                              "batch"));
    RETURN_IF_ERROR(FromRocks(
        batch.Put(meta_cf_, key_slice, EncodeEntryMeta(EntryMeta{record_bytes, tick, pinned})),
        "batch"));
    rocksdb::WriteOptions wo;
    wo.sync = options_.sync;
    RETURN_IF_ERROR(FromRocks(WriteToDb(wo, &batch), "put"));
    std::lock_guard<std::mutex> lock(mu_);
    disk_.Upsert(key, record_bytes, tick).persisted_tick = tick;
    if (value != nullptr) {
      int64_t evicted = 0;
      memory_.Insert(key, MemoryTier::Item{value, checksum}, pinned, tick, &evicted);
      counters_.memory_evictions += evicted;
    } else {
      memory_.Erase(key);
    }
  }
  EvictDiskOverBudget();
  return absl::OkStatus();
}

absl::Status CacheStore::Delete(const SpanKey& key) {
  std::unique_lock<std::shared_mutex> stripe(Stripe(key));
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!disk_.Contains(key) && !memory_.Contains(key)) return absl::OkStatus();
  }
  RETURN_IF_ERROR(DeleteFromDb(key));
  std::lock_guard<std::mutex> lock(mu_);
  disk_.Erase(key);
  memory_.Erase(key);
  return absl::OkStatus();
}

absl::Status CacheStore::WriteMeta(const SpanKey& key, const EntryMeta& meta) {
  rocksdb::WriteOptions wo;
  wo.sync = options_.sync;
  rocksdb::WriteBatch batch;
  RETURN_IF_ERROR(FromRocks(
      batch.Put(meta_cf_, ToSlice(key.AsStringView()), EncodeEntryMeta(meta)), "batch"));
  return FromRocks(WriteToDb(wo, &batch), "put meta");
}

absl::Status CacheStore::Pin(const SpanKey& key) {
  std::unique_lock<std::shared_mutex> stripe(Stripe(key));
  const uint64_t tick = NextTick();
  std::optional<MemoryTier::Item> item;
  {
    std::lock_guard<std::mutex> lock(mu_);
    const internal::LruIndex::Entry* e = disk_.Find(key);
    if (e == nullptr) return absl::NotFoundError(absl::StrCat("Pin: no value for ", key.ToHex()));
    if (e->pinned) return absl::OkStatus();
    item = memory_.Get(key, tick);
  }
  if (!item.has_value() || ValueChecksum(*item->value) != item->checksum) {
    absl::StatusOr<std::optional<MemoryTier::Item>> read = ReadVerified(key);
    if (read.status().code() == absl::StatusCode::kDataLoss || (read.ok() && !read->has_value())) {
      DropCorrupt(key);
      return absl::NotFoundError(
          absl::StrCat("Pin: value for ", key.ToHex(), " was corrupt and has been deleted"));
    }
    RETURN_IF_ERROR(read.status());
    item = **read;
  }
  const int64_t size = static_cast<int64_t>(item->value->size());
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!memory_.CanPin(size)) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "Pin: ", size, " more pinned bytes would exceed the memory budget of ",
          memory_.budget_bytes()));
    }
  }
  const int64_t record_bytes = size + static_cast<int64_t>(internal::kRecordTrailerBytes);
  RETURN_IF_ERROR(WriteMeta(key, EntryMeta{record_bytes, tick, /*pinned=*/true}));
  std::lock_guard<std::mutex> lock(mu_);
  disk_.SetPinned(key, true);
  disk_.Touch(key, tick);
  disk_.FindMutable(key)->persisted_tick = tick;
  int64_t evicted = 0;
  memory_.Insert(key, *item, /*pinned=*/true, tick, &evicted);
  counters_.memory_evictions += evicted;
  return absl::OkStatus();
}

absl::Status CacheStore::Unpin(const SpanKey& key) {
  std::unique_lock<std::shared_mutex> stripe(Stripe(key));
  const uint64_t tick = NextTick();
  int64_t record_bytes = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    const internal::LruIndex::Entry* e = disk_.Find(key);
    if (e == nullptr) return absl::NotFoundError(absl::StrCat("Unpin: no value for ", key.ToHex()));
    if (!e->pinned) return absl::OkStatus();
    record_bytes = e->size_bytes;
  }
  RETURN_IF_ERROR(WriteMeta(key, EntryMeta{record_bytes, tick, /*pinned=*/false}));
  std::lock_guard<std::mutex> lock(mu_);
  disk_.SetPinned(key, false);
  disk_.Touch(key, tick);
  disk_.FindMutable(key)->persisted_tick = tick;
  memory_.SetPinned(key, false);
  memory_.Get(key, tick);  // most recent in memory too
  return absl::OkStatus();
}

void CacheStore::EvictDiskOverBudget() {
  for (;;) {
    SpanKey victim;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (disk_.bytes_used() <= options_.disk_budget_bytes) return;
      std::optional<SpanKey> lru = disk_.LeastRecentUnpinned();
      if (!lru.has_value()) return;
      victim = *lru;
    }
    std::unique_lock<std::shared_mutex> stripe(Stripe(victim));
    {
      // Re-check: it may have been touched, pinned or deleted meanwhile.
      std::lock_guard<std::mutex> lock(mu_);
      if (disk_.bytes_used() <= options_.disk_budget_bytes) return;
      if (disk_.LeastRecentUnpinned() != victim) continue;
    }
    absl::Status s = DeleteFromDb(victim);
    if (!s.ok()) {
      LOG(ERROR) << "cachestore: evicting " << victim.ToHex() << ": " << s;
      return;
    }
    std::lock_guard<std::mutex> lock(mu_);
    disk_.Erase(victim);
    memory_.Erase(victim);
    ++counters_.disk_evictions;
  }
}

StoreStats CacheStore::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  StoreStats s = counters_;
  s.memory_entries = memory_.num_entries();
  s.memory_bytes = memory_.bytes_used();
  s.disk_entries = disk_.num_entries();
  s.disk_bytes = disk_.bytes_used();
  s.pinned_entries = disk_.num_pinned();
  return s;
}

}  // namespace kvspan::cachestore
