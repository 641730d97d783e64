#include "restore/file_premaps.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

namespace procmig {

std::vector<PremappedFile> PremapsOf(const RestoreCheckRecord& check) {
  std::vector<PremappedFile> out;
  out.reserve(check.maps.size());
  for (const FileMapping& m : check.maps) {
    if (m.file < check.files.size()) {
      out.push_back({m.start, m.end, m.offset, m.prot, m.shared, check.files[m.file].path});
    }
  }
  return out;
}

FilePremaps::~FilePremaps() { Clear(); }

void FilePremaps::Clear() {
  for (const PremappedFile& p : mapped_) munmap(reinterpret_cast<void*>(p.start), p.end - p.start);
  mapped_.clear();
  stale_.clear();
}

bool FilePremaps::Covers(uint64_t start, uint64_t length) const {
  for (const PremappedFile& p : mapped_) {
    if (!p.shared && p.start <= start && start + length <= p.end && start + length > start) {
      return true;
    }
  }
  return false;
}

void FilePremaps::MarkStale(uint64_t start, uint64_t length) {
  for (size_t i = 0; i < mapped_.size(); ++i) {
    if (mapped_[i].start < start + length && start < mapped_[i].end) stale_[i] = true;
  }
}

std::vector<PremappedFile> FilePremaps::kept() const {
  std::vector<PremappedFile> out;
  for (size_t i = 0; i < mapped_.size(); ++i) {
    if (!stale_[i]) out.push_back(mapped_[i]);
  }
  return out;
}

size_t FilePremaps::Add(std::span<const PremappedFile> wanted) {
  size_t added = 0;
  int fd = -1;
  const std::string* fd_path =
      nullptr;  // the file `fd` is open on (library segments come in a row)
  int fd_flags = 0;
  for (const PremappedFile& w : wanted) {
    if (w.path.empty() || w.path[0] != '/' || w.end <= w.start || w.start % 4096 != 0 ||
        w.end % 4096 != 0 || w.offset % 4096 != 0) {
      continue;
    }
    const int flags = w.shared && (w.prot & PROT_WRITE) != 0 ? O_RDWR : O_RDONLY;
    if (fd < 0 || fd_path == nullptr || *fd_path != w.path || fd_flags != flags) {
      if (fd >= 0) close(fd);
      fd = open(w.path.c_str(), flags | O_CLOEXEC);
      fd_path = &w.path;
      fd_flags = flags;
      if (fd < 0) continue;
    }
    void* p = mmap(reinterpret_cast<void*>(w.start), w.end - w.start, w.prot,
                   (w.shared ? MAP_SHARED : MAP_PRIVATE) | MAP_FIXED_NOREPLACE, fd,
                   static_cast<off_t>(w.offset));
    if (p == MAP_FAILED) continue;
    if (reinterpret_cast<uint64_t>(p) != w.start) {  // a kernel that took the address as a hint
      munmap(p, w.end - w.start);
      continue;
    }
    mapped_.push_back(w);
    stale_.push_back(false);
    ++added;
  }
  if (fd >= 0) close(fd);
  return added;
}

}  // namespace procmig
