// OpenStdioRedirect: the descriptors `--stdin/--stdout/--stderr PATH` hand the restorer.
#include "procmig/restore.h"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>

namespace procmig {
namespace {

struct TempDir {
  std::string path;
  TempDir() {
    char t[] = "/tmp/procmig-restore-test.XXXXXX";
    REQUIRE(mkdtemp(t) != nullptr);
    path = t;
  }
  ~TempDir() {
    for (const char* f : {"/in", "/out", "/err"}) unlink((path + f).c_str());
    rmdir(path.c_str());
  }
};

std::string ReadAll(const std::string& path) {
  std::string s;
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "(unreadable)";
  char buf[256];
  ssize_t n;
  while ((n = read(fd, buf, sizeof buf)) > 0) s.append(buf, static_cast<size_t>(n));
  close(fd);
  return s;
}

TEST_CASE("stdin is opened read-only; stdout and stderr appended to, created 0644") {
  TempDir d;
  const std::string in = d.path + "/in", out = d.path + "/out";
  {
    int f = open(in.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    REQUIRE(f >= 0);
    REQUIRE(write(f, "x\n", 2) == 2);
    close(f);
    f = open(out.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    REQUIRE(f >= 0);
    REQUIRE(write(f, "old\n", 4) == 4);
    close(f);
  }
  absl::StatusOr<int> r0 = OpenStdioRedirect(0, in);
  REQUIRE(r0.ok());
  CHECK(*r0 > 2);
  CHECK((fcntl(*r0, F_GETFL) & O_ACCMODE) == O_RDONLY);
  CHECK((fcntl(*r0, F_GETFD) & FD_CLOEXEC) != 0);
  close(*r0);

  absl::StatusOr<int> r1 = OpenStdioRedirect(1, out);
  REQUIRE(r1.ok());
  CHECK(*r1 > 2);
  CHECK((fcntl(*r1, F_GETFL) & (O_ACCMODE | O_APPEND)) == (O_WRONLY | O_APPEND));
  CHECK((fcntl(*r1, F_GETFD) & FD_CLOEXEC) != 0);
  CHECK(write(*r1, "new\n", 4) == 4);
  close(*r1);
  CHECK(ReadAll(out) == "old\nnew\n");  // appended, not truncated

  const mode_t old_mask = umask(022);
  absl::StatusOr<int> r2 = OpenStdioRedirect(2, d.path + "/err");
  umask(old_mask);
  REQUIRE(r2.ok());
  struct stat st;
  REQUIRE(fstat(*r2, &st) == 0);
  CHECK((st.st_mode & 0777) == 0644);
  close(*r2);
}

TEST_CASE("a redirect opened while our own stdio is closed is still above 2") {
  TempDir d;
  const int saved = fcntl(0, F_DUPFD_CLOEXEC, 10);
  REQUIRE(saved >= 0);
  close(0);
  absl::StatusOr<int> r = OpenStdioRedirect(1, d.path + "/out");
  dup2(saved, 0);
  close(saved);
  REQUIRE(r.ok());
  CHECK(*r > 2);
  CHECK(fcntl(0, F_GETFD) >= 0);
  close(*r);
}

TEST_CASE("failures name the path, the call and the errno") {
  absl::StatusOr<int> r = OpenStdioRedirect(1, "/nonexistent-procmig-dir/out");
  REQUIRE(!r.ok());
  CHECK(r.status().message() ==
        "/nonexistent-procmig-dir/out: open: ENOENT (No such file or directory)");
  absl::StatusOr<int> bad = OpenStdioRedirect(3, "/dev/null");
  REQUIRE(!bad.ok());
  CHECK(bad.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(bad.status().message() == "stdio redirect: fd 3 is not 0, 1 or 2");
}

}  // namespace
}  // namespace procmig
