// Where the blob's code is in this binary (restorer_blob.cc is built without the C++ library).
#include "restore/restorer_blob.h"

extern "C" {
extern const uint8_t __start_procmig_blob[] __attribute__((visibility("hidden")));
extern const uint8_t __stop_procmig_blob[] __attribute__((visibility("hidden")));
void procmig_blob_entry(void* args, uint64_t stack_top) __attribute__((visibility("hidden")));
long procmig_blob_clone3(void* clone_args, uint64_t size) __attribute__((visibility("hidden")));
}

namespace procmig::restore_blob {

std::span<const uint8_t> Code() {
  return {__start_procmig_blob, static_cast<size_t>(__stop_procmig_blob - __start_procmig_blob)};
}

size_t EntryOffset() {
  return static_cast<size_t>(reinterpret_cast<const uint8_t*>(&procmig_blob_entry) -
                             __start_procmig_blob);
}

size_t Clone3Offset() {
  return static_cast<size_t>(reinterpret_cast<const uint8_t*>(&procmig_blob_clone3) -
                             __start_procmig_blob);
}

}  // namespace procmig::restore_blob
