// heap_churn: several threads allocating, freeing, reallocating and rewriting heap objects under
// mutexes, every object self-describing and checksummed.
//
// Each of --threads workers owns a shard (a mutex and --slots object pointers); one more shard is
// shared by all, so threads also contend and sleep in futex waits, a state the migration agent
// must park and resume correctly. Object content is a function of its seed, so any byte is
// checkable; each shard also counts its live objects and bytes. Every operation verifies the
// object it touches first (continuous check); SIGUSR1/SIGUSR2 make the main thread lock every
// shard in turn and verify all of it. A worker holds at most one shard lock at a time, so the
// checker's in-order locking cannot deadlock.
#include <pthread.h>

#include <atomic>
#include <cinttypes>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "workload_common.h"

namespace procmig::examples {
namespace {

constexpr uint64_t kMagic = 0x6865617063687572ull;  // "heapchur"

struct Object {
  uint64_t magic;
  uint32_t shard;
  uint32_t slot;
  uint64_t words;  // payload length in 8-byte words
  uint64_t seed;
  uint64_t checksum;  // of the payload, kept separately from the content rule on purpose
  uint64_t payload[];
};

struct Shard {
  pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
  std::vector<Object*> slots;  // guarded by mu
  uint64_t live = 0;           // guarded by mu
  uint64_t live_words = 0;     // guarded by mu
};

struct Config {
  uint32_t threads;
  uint32_t slots;
  uint64_t max_words;
  uint64_t ops_per_s;
};

std::atomic<bool> g_stop{false};

uint64_t Checksum(const Object* o) {
  uint64_t h = o->seed;
  for (uint64_t i = 0; i < o->words; ++i) h = Mix64(h ^ o->payload[i]);
  return h;
}

void Fill(Object* o, uint64_t seed) {
  o->seed = seed;
  for (uint64_t i = 0; i < o->words; ++i) o->payload[i] = Mix64(seed + i);
  o->checksum = Checksum(o);
}

// Empty string when the object is intact, else what is wrong.
bool Verify(const Object* o, uint32_t shard, uint32_t slot, char* why, size_t why_len) {
  if (o->magic != kMagic || o->shard != shard || o->slot != slot) {
    snprintf(why, why_len,
             "object %p in shard %u slot %u: bad header (magic %" PRIx64 " shard %u slot %u)",
             static_cast<const void*>(o), shard, slot, o->magic, o->shard, o->slot);
    return false;
  }
  for (uint64_t i = 0; i < o->words; ++i) {
    if (o->payload[i] != Mix64(o->seed + i)) {
      snprintf(why, why_len, "object %p shard %u slot %u: word %" PRIu64 " of %" PRIu64 " corrupt",
               static_cast<const void*>(o), shard, slot, i, o->words);
      return false;
    }
  }
  if (Checksum(o) != o->checksum) {
    snprintf(why, why_len, "object %p shard %u slot %u: checksum mismatch",
             static_cast<const void*>(o), shard, slot);
    return false;
  }
  return true;
}

Object* NewObject(uint64_t words, uint32_t shard, uint32_t slot, uint64_t seed) {
  auto* o = static_cast<Object*>(malloc(sizeof(Object) + words * 8));
  if (o == nullptr) FailNow("malloc of %" PRIu64 " words failed", words);
  o->magic = kMagic;
  o->shard = shard;
  o->slot = slot;
  o->words = words;
  Fill(o, seed);
  return o;
}

void OneOp(std::vector<Shard>& shards, const Config& cfg, Rng& rng) {
  const uint32_t si =
      static_cast<uint32_t>(rng.Below(4) == 0 ? cfg.threads : rng.Below(cfg.threads));
  Shard& sh = shards[si];
  const uint32_t slot = static_cast<uint32_t>(rng.Below(cfg.slots));
  const uint64_t words = 1 + rng.Below(cfg.max_words);
  char why[256];
  pthread_mutex_lock(&sh.mu);
  Object*& o = sh.slots[slot];
  if (o == nullptr) {
    o = NewObject(words, si, slot, rng.Next());
    sh.live += 1;
    sh.live_words += words;
  } else {
    if (!Verify(o, si, slot, why, sizeof(why))) FailNow("%s", why);
    const uint64_t kind = rng.Below(3);
    if (kind == 0) {
      sh.live -= 1;
      sh.live_words -= o->words;
      o->magic = 0;  // a stale pointer to freed memory must not verify
      free(o);
      o = nullptr;
    } else if (kind == 1) {
      Fill(o, rng.Next());
    } else {
      auto* grown = static_cast<Object*>(realloc(o, sizeof(Object) + words * 8));
      if (grown == nullptr) FailNow("realloc to %" PRIu64 " words failed", words);
      sh.live_words = sh.live_words - grown->words + words;
      grown->words = words;
      Fill(grown, rng.Next());
      o = grown;
    }
  }
  pthread_mutex_unlock(&sh.mu);
}

struct WorkerArgs {
  std::vector<Shard>* shards;
  const Config* cfg;
  uint32_t index;
  std::atomic<uint64_t>* ops;
};

void* Worker(void* arg) {
  auto* a = static_cast<WorkerArgs*>(arg);
  Rng rng(Mix64(a->index + 1) ^ static_cast<uint64_t>(getpid()));
  Pacer pacer(static_cast<double>(a->cfg->ops_per_s));
  while (!g_stop.load(std::memory_order_relaxed)) {
    OneOp(*a->shards, *a->cfg, rng);
    a->ops->fetch_add(1, std::memory_order_relaxed);
    pacer.Tick();
  }
  return nullptr;
}

bool CheckAll(std::vector<Shard>& shards, uint64_t ops, char* detail, size_t len) {
  uint64_t objects = 0;
  bool ok = true;
  for (uint32_t si = 0; si < shards.size() && ok; ++si) {
    Shard& sh = shards[si];
    pthread_mutex_lock(&sh.mu);
    uint64_t live = 0, words = 0;
    for (uint32_t slot = 0; slot < sh.slots.size() && ok; ++slot) {
      const Object* o = sh.slots[slot];
      if (o == nullptr) continue;
      ok = Verify(o, si, slot, detail, len);
      live += 1;
      words += o->words;
    }
    if (ok && (live != sh.live || words != sh.live_words)) {
      snprintf(detail, len,
               "shard %u: %" PRIu64 " objects/%" PRIu64 " words found, counters say %" PRIu64
               "/%" PRIu64,
               si, live, words, sh.live, sh.live_words);
      ok = false;
    }
    objects += live;
    pthread_mutex_unlock(&sh.mu);
  }
  if (ok) {
    snprintf(detail, len,
             "heap_churn: %zu shards, %" PRIu64 " live objects intact after %" PRIu64 " operations",
             shards.size(), objects, ops);
  }
  return ok;
}

int Main(int argc, char** argv) {
  InstallCheckHandlers();
  Config cfg;
  cfg.threads = static_cast<uint32_t>(FlagU64(argc, argv, "--threads", 4));
  cfg.slots = static_cast<uint32_t>(FlagU64(argc, argv, "--slots", 2048));
  cfg.max_words = FlagU64(argc, argv, "--max-bytes", 16384) / 8;
  cfg.ops_per_s = FlagU64(argc, argv, "--ops-per-sec", 5000);
  if (cfg.threads == 0 || cfg.slots == 0 || cfg.max_words == 0) FailNow("bad configuration");

  std::vector<Shard> shards(cfg.threads + 1);
  for (auto& sh : shards) sh.slots.assign(cfg.slots, nullptr);
  // Half-fill before READY so the first migration already sees a populated heap.
  Rng rng(42);
  for (uint32_t i = 0; i < cfg.threads * cfg.slots / 2; ++i) OneOp(shards, cfg, rng);

  std::atomic<uint64_t> ops{0};
  std::vector<WorkerArgs> args(cfg.threads);
  std::vector<pthread_t> tids(cfg.threads);
  for (uint32_t i = 0; i < cfg.threads; ++i) {
    args[i] = {&shards, &cfg, i, &ops};
    if (pthread_create(&tids[i], nullptr, Worker, &args[i]) != 0) FailNow("pthread_create");
  }
  Say("READY pid=%d threads=%u slots=%u", getpid(), cfg.threads, cfg.slots);
  char detail[320];
  for (;;) {
    const CheckRequest req = CheckRequested();
    if (req == CheckRequest::kQuit) _exit(0);
    if (req != CheckRequest::kNone) {
      if (ops.load() == 0) FailNow("heap_churn: workers made no progress");
      const bool ok = CheckAll(shards, ops.load(), detail, sizeof(detail));
      ReportCheck(req, ok, detail);
    }
    SleepUntil(NowNs() + 10000000);  // 10 ms: the workers do the work
  }
}

}  // namespace
}  // namespace procmig::examples

int main(int argc, char** argv) { return procmig::examples::Main(argc, argv); }
