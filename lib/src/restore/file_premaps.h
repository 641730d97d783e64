// FilePremaps: a live receiver maps the migrated process's files at their final addresses while
// the memory is still streaming (where those ranges are free here), so that at end of stream the
// restorer keeps them (restore_plan.h PremappedFile) instead of mapping some hundred library
// segments again while the program is paused. The restored process, a copy of the receiver,
// inherits them; the receiver's own copies are unmapped when this object goes.
//
// The receiver may also write the pages of the blocks it receives for these mappings (a library's
// .data and RELRO pages) straight into them (ReceiverOptions::premapped), so the restorer keeps
// them as they are. A mapping written by a block that then went away (or changed size) holds bytes
// nothing vouches for: MarkStale() takes it out of kept(), and the restorer maps it anew.
//
// Threads: one owner.
#ifndef PROCMIG_RESTORE_FILE_PREMAPS_H_
#define PROCMIG_RESTORE_FILE_PREMAPS_H_

#include <cstddef>
#include <span>
#include <vector>

#include "migration/restore_check.h"
#include "restore/restore_plan.h"

namespace procmig {

// The file mappings of a restore_check record, as FilePremaps::Add wants them.
std::vector<PremappedFile> PremapsOf(const RestoreCheckRecord& check);

class FilePremaps {
 public:
  FilePremaps() = default;
  ~FilePremaps();
  FilePremaps(const FilePremaps&) = delete;
  FilePremaps& operator=(const FilePremaps&) = delete;

  // Maps each wanted file mapping (absolute path, page-aligned range) at its address with its
  // protection, never over anything already mapped here. What cannot be premapped (range in
  // use, file gone, a kernel refusal) is left to the restorer: returns how many were mapped.
  size_t Add(std::span<const PremappedFile> wanted);
  // Unmaps every premap.
  void Clear();

  // Whether one PRIVATE premap covers all of [start, start + length): where received pages may
  // be written (a write to a shared one would reach the file, whatever a sender claims).
  bool Covers(uint64_t start, uint64_t length) const;
  // Every premap overlapping [start, start + length) must not be kept.
  void MarkStale(uint64_t start, uint64_t length);

  std::span<const PremappedFile> mapped() const { return mapped_; }
  // The premaps a restorer may keep: mapped() but the stale ones.
  std::vector<PremappedFile> kept() const;

 private:
  std::vector<PremappedFile> mapped_;
  std::vector<bool> stale_;  // per mapped_ entry
};

}  // namespace procmig

#endif  // PROCMIG_RESTORE_FILE_PREMAPS_H_
