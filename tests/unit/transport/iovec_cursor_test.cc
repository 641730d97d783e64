#include "transport/iovec_cursor.h"

#include <doctest/doctest.h>

#include <string>

namespace procmig {
namespace {

std::string Window(const IovecCursor& c, size_t max_iov, size_t max_bytes, size_t* count) {
  iovec out[8];
  size_t bytes = 0;
  *count = c.Fill(out, max_iov, max_bytes, &bytes);
  std::string s;
  for (size_t i = 0; i < *count; ++i) s.append(static_cast<char*>(out[i].iov_base), out[i].iov_len);
  CHECK(s.size() == bytes);
  return s;
}

TEST_CASE("cursor walks iovecs, skipping empty ones, without touching the caller's array") {
  char a[] = "abc", b[] = "", c[] = "defgh";
  iovec iov[3] = {{a, 3}, {b, 0}, {c, 5}};
  IovecCursor cur(iov, 3);
  CHECK(cur.remaining() == 8);
  size_t n = 0;
  CHECK(Window(cur, 8, 100, &n) == "abcdefgh");
  CHECK(n == 2);  // the empty iovec is not emitted
  CHECK(Window(cur, 1, 100, &n) == "abc");
  CHECK(Window(cur, 8, 5, &n) == "abcde");
  CHECK(n == 2);

  cur.Advance(2);
  CHECK(Window(cur, 8, 100, &n) == "cdefgh");
  cur.Advance(1);  // lands exactly on an iovec boundary, then past the empty one
  CHECK(Window(cur, 8, 2, &n) == "de");
  CHECK(n == 1);
  cur.Advance(5);
  CHECK(cur.done());
  CHECK(Window(cur, 8, 100, &n).empty());
  CHECK(n == 0);
  CHECK(iov[0].iov_len == 3);
  CHECK(iov[2].iov_base == c);
}

TEST_CASE("iovecs adjacent in memory are merged into one segment") {
  char buf[] = "abcdefgh";
  iovec iov[4] = {{buf, 3}, {buf + 3, 2}, {buf + 6, 1}, {buf + 7, 1}};
  IovecCursor cur(iov, 4);
  iovec out[4];
  size_t bytes = 0;
  REQUIRE(cur.Fill(out, 4, 100, &bytes) == 2);
  CHECK(bytes == 7);
  CHECK(out[0].iov_base == buf);
  CHECK(out[0].iov_len == 5);
  CHECK(out[1].iov_base == buf + 6);
  CHECK(out[1].iov_len == 2);
  // The iovec limit counts merged segments, not input iovecs.
  REQUIRE(cur.Fill(out, 1, 100, &bytes) == 1);
  CHECK(bytes == 5);
  // The byte limit cuts inside a merged run.
  REQUIRE(cur.Fill(out, 4, 4, &bytes) == 1);
  CHECK(bytes == 4);
  CHECK(out[0].iov_len == 4);
  cur.Advance(4);
  REQUIRE(cur.Fill(out, 4, 100, &bytes) == 2);
  CHECK(bytes == 3);
  CHECK(out[0].iov_base == buf + 4);
  CHECK(out[0].iov_len == 1);
}

TEST_CASE("empty batch is done at once") {
  IovecCursor cur(nullptr, 0);
  CHECK(cur.done());
}

}  // namespace
}  // namespace procmig
