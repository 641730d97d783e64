// A hostile process-state record (the last record of a stream, or process-state.bin of an image):
// decoding must reject it cleanly or yield a record that re-encodes to the same bytes (one of an
// older version still decoded: to a record that decodes back to itself), and the
// restore plan built from whatever decodes must be refused or well-formed (never a crash, never a
// plan whose arrays run outside its argument block).
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "migration/process_state.h"
#include "restore/restore_plan.h"
#include "restore/restorer_abi.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace procmig;
  absl::StatusOr<ProcessStateRecord> r = DecodeProcessState({data, size});
  if (!r.ok()) return 0;
  std::string again;
  if (!EncodeProcessState(*r, &again).ok()) std::abort();
  const bool current = data[4] == (kProcessStateVersion & 0xff) && data[5] == 0;
  if (current) {
    if (again.size() != size || std::memcmp(again.data(), data, size) != 0) {
      std::abort();  // a record that decodes must be canonical
    }
  } else {
    absl::StatusOr<ProcessStateRecord> up =
        DecodeProcessState({reinterpret_cast<const uint8_t*>(again.data()), again.size()});
    if (!up.ok() || !(*up == *r)) std::abort();  // an older record converts without loss
  }
  // Blocks where the record's writable VMAs are, at fixed temporary addresses.
  std::vector<PlacedBlock> blocks;
  uint64_t temp = 0x200000000000;
  for (const VmaRecord& v : r->vmas) {
    if (v.end > v.start && (v.prot & 2) && blocks.size() < 64) {
      blocks.push_back({static_cast<uint32_t>(blocks.size() + 1), v.start, v.end - v.start, temp});
      temp += ((v.end - v.start + (2u << 20) - 1) & ~uint64_t{(2u << 20) - 1}) + (2u << 20);
    }
  }
  MemoryRegion vdso;
  vdso.start = 0x7f0000000000;
  vdso.end = 0x7f0000002000;
  vdso.readable = vdso.executable = true;
  vdso.path = "[vdso]";
  std::vector<MemoryRegion> cur{vdso};
  RestorePlanInput in;
  in.state = &*r;
  in.blocks = blocks;
  in.current = cur;
  in.code_bytes = 4096;
  in.report_fd = MaxRestoredFd(*r) + 1;
  absl::StatusOr<RestorePlan> plan = BuildRestorePlan(in);
  if (!plan.ok()) return 0;
  const auto* a = reinterpret_cast<const restore_abi::Args*>(plan->args.data());
  const uint64_t n = plan->args.size();
  if (a->size != n || a->ops + uint64_t{a->nops} * sizeof(restore_abi::Op) > n ||
      a->threads + uint64_t{a->nthreads} * sizeof(restore_abi::Thread) > n ||
      a->fds + uint64_t{a->nfds} * sizeof(restore_abi::Fd) > n ||
      a->keep + uint64_t{a->nkeep} * sizeof(restore_abi::Range) > n ||
      a->epoll_items + uint64_t{a->nepoll_items} * sizeof(restore_abi::EpollItem) > n) {
    std::abort();
  }
  return 0;
}
