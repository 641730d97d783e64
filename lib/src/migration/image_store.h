// ImageStore: writes a checkpoint image directory (format in image_manifest.h) atomically, and
// reads one back.
//
// Write() builds the image in a fresh hidden sibling directory, "<parent>/.tmp-<name>-XXXXXX",
// then renames it to its final name (rename(2) replaces an empty directory, never a non-empty
// one), so a reader sees either no image or a complete one, and a failed receive never leaves a
// half image: on any error the temporary directory is removed. Block files are sparse: only pages
// that may hold data are written. With `sync`, files and directories are fsync'ed before the
// rename, so the image survives a crash once Write() returned.
//
// Stateless functions grouped in a class; any thread, one Write per destination at a time.
#ifndef PROCMIG_MIGRATION_IMAGE_STORE_H_
#define PROCMIG_MIGRATION_IMAGE_STORE_H_

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "migration/block_memory.h"
#include "migration/image_manifest.h"

namespace procmig {

class ImageStore {
 public:
  // `memory[i]` holds the content of manifest.blocks[i]; stored_pages of each block is filled in
  // here. The manifest's crcs must already be set (the receiver computes them while verifying).
  // AlreadyExists when final_dir exists and is not empty. Returns the manifest as written.
  static absl::StatusOr<ImageManifest> Write(const std::string& final_dir, ImageManifest manifest,
                                             std::span<const BlockMemory* const> memory,
                                             std::span<const uint8_t> process_state, bool sync);

  // Reads and parses DIR/MANIFEST. NotFound when it is missing (not an image).
  static absl::StatusOr<ImageManifest> ReadManifest(const std::string& dir);
  // Reads a block's file, checking its size and crc32c against the manifest (DataLoss).
  static absl::StatusOr<std::vector<uint8_t>> ReadBlock(const std::string& dir,
                                                        const ImageManifest& m,
                                                        const ImageBlock& block);
  // The same into `dst` (block.length bytes that read as zero, e.g. fresh anonymous memory):
  // only the file's data extents are read (SEEK_DATA/SEEK_HOLE), holes are left as they are.
  static absl::Status ReadBlockInto(const std::string& dir, const ImageBlock& block,
                                    std::span<uint8_t> dst);
  static absl::StatusOr<std::vector<uint8_t>> ReadProcessState(const std::string& dir,
                                                               const ImageManifest& m);
};

}  // namespace procmig

#endif  // PROCMIG_MIGRATION_IMAGE_STORE_H_
