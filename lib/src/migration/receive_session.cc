#include "migration/receive_session.h"

#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "migration/image_store.h"

namespace procmig {

absl::StatusOr<ReceiveSessionResult> RunReceiveSession(ChannelGroupReceiver& group,
                                                       const ReceiveSessionOptions& options) {
  if (!options.image_dir && !options.deliver) {
    return absl::InvalidArgumentError("receive session: neither image_dir nor deliver");
  }
  Receiver receiver(group.size(), options.receiver, &group.channel(0));
  std::mutex mu;
  std::optional<ReceiveSessionResult> result;  // guarded by mu
  absl::Status error;                          // guarded by mu

  auto complete = [&]() -> absl::Status {
    absl::StatusOr<ImageManifest> m = receiver.Finish();
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
    std::string dir = options.image_dir(m->session_id);
    absl::StatusOr<ImageManifest> stored =
        ImageStore::Write(dir, *m, mem, receiver.process_state(), options.sync);
    if (!stored.ok()) {
      const absl::Status& s = stored.status();
      return receiver.Fail(absl::Status(s.code(), absl::StrCat("store image: ", s.message())));
    }
    RETURN_IF_ERROR(receiver.Ack());
    std::lock_guard<std::mutex> l(mu);
    result = ReceiveSessionResult{std::move(*stored), dir};
    return absl::OkStatus();
  };

  std::vector<std::thread> threads;
  for (size_t i = 0; i < group.size(); ++i) {
    threads.emplace_back([&, i] {
      std::unique_ptr<uint8_t[]> buf(new uint8_t[options.chunk_bytes]);
      Channel& ch = group.channel(i);
      for (;;) {
        absl::StatusOr<size_t> n = ch.ReadSome(buf.get(), options.chunk_bytes);
        if (!n.ok() || *n == 0) {
          receiver.ChannelClosed(i, n.ok() ? absl::OkStatus() : n.status());
          break;
        }
        absl::StatusOr<bool> done = receiver.Feed(i, {buf.get(), *n});
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
