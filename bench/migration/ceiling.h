// The ceilings a migration's throughput is judged against, measured in the bench's own run:
// a plain memory-to-memory loopback TCP copy, and writing the same bytes into the receiver's
// destination (freshly mapped memory, where page faults are the cost; or a file in the store
// directory); and the same TCP copy through the shaped link to a namespace (NetnsLink).
// Stateless functions; the bench thread calls them (TcpCopyRate runs one sender thread of its
// own, NetnsTcpCopyRate one child process). Rates are bytes per second.
#ifndef PROCMIG_BENCH_MIGRATION_CEILING_H_
#define PROCMIG_BENCH_MIGRATION_CEILING_H_

#include <cstddef>
#include <cstdint>
#include <string>

namespace procmig::bench {

// `src` (already populated) streamed over one loopback TCP connection into `dst` (already
// populated, so the copy pays no page faults). 0 on a socket error.
double TcpCopyRate(const uint8_t* src, size_t bytes, uint8_t* dst);

// `src` streamed over one TCP connection to `addr`, an address in the network namespace at
// `netns_path` (/run/netns/NAME), where a forked child joined to that namespace reads it into a
// 1 MiB buffer: the one-stream rate of the link to the namespace. 0 on any failure.
double NetnsTcpCopyRate(const std::string& netns_path, const std::string& addr, const uint8_t* src,
                        size_t bytes);

// The live pipeline with nothing of procmig's around it: `streams` loopback TCP connections, each
// carrying its slice of `src`; each sender thread takes the crc32c of every 4 KiB page before it
// writes a 1 MiB chunk, each receiver thread reads 256 KiB at a time into freshly mmapped memory
// (MADV_HUGEPAGE, as the live receiver asks where a block allows) and takes every page's crc32c
// again. What a live migration of `src` on `streams` channels cannot beat on this machine: the
// copies, the destination's page faults and the checksums both sides must pay. 0 on a socket
// error or if the received crcs differ from the sent ones.
double PipelineFloorRate(const uint8_t* src, size_t bytes, int streams);

// memcpy of `src` into freshly mmapped anonymous memory, 1 MiB at a time; `huge` asks for
// transparent huge pages (MADV_HUGEPAGE) first.
double FreshMemoryRate(const uint8_t* src, size_t bytes, bool huge);

// write(2) of `src` into a new file in `dir`, then unlink. 0 on error. `durable`: the fsync is
// timed too (as `receive --store` syncs its image before the ack); else the page cache only.
// `direct`: the file is open with O_DIRECT (`src` page-aligned; 0 where that is refused).
double StoreWriteRate(const uint8_t* src, size_t bytes, const std::string& dir, bool durable,
                      bool direct = false);

// The faster of the two ways to write `src` durably into `dir` (through the page cache, or
// O_DIRECT), each with its fsync: the store directory's ceiling.
double DurableStoreRate(const uint8_t* src, size_t bytes, const std::string& dir);

}  // namespace procmig::bench

#endif  // PROCMIG_BENCH_MIGRATION_CEILING_H_
