// ImageWriter: builds one checkpoint image directory (format in image_manifest.h) while its
// stream arrives, and publishes it atomically at the end.
//
// Begin() refuses a final directory that exists and is not empty (before any memory is sent),
// then makes a fresh hidden sibling, "<parent>/.tmp-<name>-XXXXXX", and holds an flock on it for
// its whole life. A receiver writes each block into its own file there while the stream arrives
// (CreateBlockFile, FileRunWriter) and a write-behind thread starts the writeback of what it
// wrote every 50 ms (sync_file_range), so by the end of the stream most of the image is on disk
// already, and Commit() only writes the small files, syncs what is left and
// renames the directory into place (rename(2) replaces an empty directory, never a non-empty
// one), so a reader sees either no image or a complete one. Blocks that have no file yet are
// written out by Commit() from their memory.
//
// An ImageWriter destroyed without a successful Commit() removes its directory. A receiver that
// was killed leaves its temporary directory behind, unlocked: the next Begin() for the same name
// removes such leftovers (a live writer's flock keeps its own directory safe); a multi-session
// receiver removes its store's session leftovers when it starts (RemoveStaleSessionTemps).
//
// Thread-safe: CreateBlockFile/RemoveBlockFile may be called from any thread; Commit() once.
#ifndef PROCMIG_MIGRATION_IMAGE_WRITER_H_
#define PROCMIG_MIGRATION_IMAGE_WRITER_H_

#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "migration/block_memory.h"
#include "migration/image_manifest.h"
#include "transport/unique_fd.h"

namespace procmig {

class ImageWriter {
 public:
  // AlreadyExists when final_dir exists and is not empty.
  static absl::StatusOr<std::unique_ptr<ImageWriter>> Begin(const std::string& final_dir);
  // A multi-session receiver's store names each image by its session id (32 hex digits), so a
  // retry after a killed receiver, a new session, never meets the leftover of the old one:
  // removes every "<store>/.tmp-<session id>-XXXXXX" that no live writer holds. Returns how many.
  static size_t RemoveStaleSessionTemps(const std::string& store_dir);
  ~ImageWriter();
  ImageWriter(const ImageWriter&) = delete;
  ImageWriter& operator=(const ImageWriter&) = delete;

  // Creates block `id`'s file (empty) and returns a descriptor of it, read-write, for the writer
  // of the block's pages. AlreadyExists when it was created before.
  absl::StatusOr<UniqueFd> CreateBlockFile(uint32_t id);
  // The block was removed from the stream: its file goes.
  void RemoveBlockFile(uint32_t id);

  // `memory[i]` holds manifest.blocks[i]; a block with a file must be in it completely already.
  // stored_pages of each block is filled in here, the crcs must be set already. With `sync`,
  // every file and the directory are fsync'ed before the rename, the parent directory after it.
  // Returns the manifest as written. The directory is removed on failure.
  absl::StatusOr<ImageManifest> Commit(ImageManifest manifest,
                                       std::span<const BlockMemory* const> memory,
                                       std::span<const uint8_t> process_state, bool sync);

  const std::string& final_dir() const { return final_dir_; }
  const std::string& temp_dir() const { return tmp_; }

 private:
  ImageWriter(std::string final_dir, std::string parent, std::string tmp, UniqueFd dir_fd);
  void WriteBehind();
  void StopWriteBehind();

  const std::string final_dir_;
  const std::string parent_;
  const std::string tmp_;
  const UniqueFd dir_fd_;  // holds the flock
  bool committed_ = false;

  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::map<uint32_t, UniqueFd> files_ ABSL_GUARDED_BY(mu_);  // block id -> its file
  std::thread write_behind_;
};

}  // namespace procmig

#endif  // PROCMIG_MIGRATION_IMAGE_WRITER_H_
