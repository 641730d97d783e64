#include "migration/receive_session.h"

#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "migration/image_writer.h"

namespace procmig {

absl::StatusOr<ReceiveSessionResult> RunReceiveSession(ChannelGroupReceiver& group,
                                                       const ReceiveSessionOptions& options) {
  if (!options.image_dir && !options.deliver) {
    return absl::InvalidArgumentError("receive session: neither image_dir nor deliver");
  }
  // The image being written (stored sessions): begun at the first block's file (or at the end
  // when there is no block), committed at the end.
  std::mutex writer_mu;
  std::unique_ptr<ImageWriter> writer;  // guarded by writer_mu
  auto begin_writer = [&](const std::array<uint8_t, 16>& session) -> absl::Status {
    if (writer == nullptr) {
      ASSIGN_OR_RETURN(writer, ImageWriter::Begin(options.image_dir(session)));
    }
    return absl::OkStatus();
  };
  ReceiverOptions ro = options.receiver;
  if (!options.deliver) {
    ro.block_file = [&](const std::array<uint8_t, 16>& session,
                        uint32_t block) -> absl::StatusOr<UniqueFd> {
      std::lock_guard<std::mutex> l(writer_mu);
      RETURN_IF_ERROR(begin_writer(session));
      return writer->CreateBlockFile(block);
    };
    ro.block_file_removed = [&](uint32_t block) {
      std::lock_guard<std::mutex> l(writer_mu);
      if (writer != nullptr) writer->RemoveBlockFile(block);
    };
  }
  Receiver receiver(group.size(), std::move(ro), &group.channel(0));
  std::mutex mu;
  std::optional<ReceiveSessionResult> result;  // guarded by mu
  absl::Status error;                          // guarded by mu

  auto complete = [&]() -> absl::Status {
    const auto t0 = std::chrono::steady_clock::now();
    absl::StatusOr<ImageManifest> m = receiver.Finish();
    const auto t1 = std::chrono::steady_clock::now();
    if (!m.ok()) return m.status();
    std::vector<const BlockMemory*> mem = receiver.BlockMemories();
    if (options.deliver) {
      absl::Status d = options.deliver(*m, mem, receiver.process_state());
      if (!d.ok()) return receiver.Fail(d);
      RETURN_IF_ERROR(receiver.Ack());
      std::lock_guard<std::mutex> l(mu);
      result = ReceiveSessionResult{std::move(*m), ""};
      return absl::OkStatus();
    }
    std::string dir;
    absl::StatusOr<ImageManifest> stored = [&]() -> absl::StatusOr<ImageManifest> {
      std::lock_guard<std::mutex> l(writer_mu);
      RETURN_IF_ERROR(begin_writer(m->session_id));
      dir = writer->final_dir();
      return writer->Commit(*m, mem, receiver.process_state(), options.sync);
    }();
    if (!stored.ok()) {
      const absl::Status& s = stored.status();
      return receiver.Fail(absl::Status(s.code(), absl::StrCat("store image: ", s.message())));
    }
    const auto t2 = std::chrono::steady_clock::now();
    RETURN_IF_ERROR(receiver.Ack());
    std::lock_guard<std::mutex> l(mu);
    auto us = [](auto d) {
      return static_cast<uint64_t>(
          std::chrono::duration_cast<std::chrono::microseconds>(d).count());
    };
    result = ReceiveSessionResult{std::move(*stored), dir, us(t1 - t0), us(t2 - t1)};
    return absl::OkStatus();
  };

  std::vector<std::thread> threads;
  for (size_t i = 0; i < group.size(); ++i) {
    threads.emplace_back([&, i] {
      std::unique_ptr<uint8_t[]> buf(new uint8_t[options.chunk_bytes]);
      Channel& ch = group.channel(i);
      for (;;) {
        absl::StatusOr<size_t> n =
            ch.ReadSome(buf.get(), receiver.NextReadSize(i, options.chunk_bytes));
        if (!n.ok() || *n == 0) {
          receiver.ChannelClosed(i, n.ok() ? absl::OkStatus() : n.status());
          break;
        }
        // The receiver reads the rest of a page run cut by this chunk from `ch` itself.
        absl::StatusOr<bool> done = receiver.Feed(i, {buf.get(), *n}, &ch);
        absl::Status s = done.ok() ? absl::OkStatus() : done.status();
        if (s.ok() && *done) s = complete();
        if (!s.ok()) {
          std::lock_guard<std::mutex> l(mu);
          if (error.ok()) error = s;
          break;
        }
      }
      if (receiver.state() == Receiver::State::kFailed) {
        receiver.AwaitFailureReported();
        group.Abort();
      }
    });
  }
  for (auto& t : threads) t.join();
  std::lock_guard<std::mutex> l(mu);
  if (receiver.state() == Receiver::State::kFailed) return receiver.Fail(error);
  if (!result.has_value()) return absl::InternalError("receive session: ended without a result");
  return std::move(*result);
}

}  // namespace procmig
