// ToJson and ToTable on hand-built KernelCaps: exact text.
#include <doctest/doctest.h>

#include <string>

#include "os/kernel_caps.h"

namespace procmig {
namespace {

KernelCaps Sample() {
  KernelCaps caps;
  caps.kernel_release = "6.18.0-test";
  caps.page_size = 4096;
  caps.thp_mode = "madvise";
  caps.features = {
      {"userfaultfd", "userfaultfd", true, "userfaultfd(2) + UFFDIO_API: api 0xaa"},
      {"userfaultfd", "uffd_wp_async", false, "UFFDIO_API does not report it"},
      {"dirty tracking primitives", "soft_dirty", false, "bit 55 stayed 0"},
  };
  caps.dirty_backends = {
      {"dirty tracking backends", "pagemap-scan", false, "missing uffd_wp_async"},
      {"dirty tracking backends", "full", true, "always"},
  };
  return caps;
}

TEST_CASE("ToTable aligns names and groups rows under their section") {
  const std::string want =
      "kernel 6.18.0-test, page size 4096, transparent hugepages madvise\n"
      "\n"
      "userfaultfd\n"
      "  userfaultfd    yes  userfaultfd(2) + UFFDIO_API: api 0xaa\n"
      "  uffd_wp_async  no   UFFDIO_API does not report it\n"
      "\n"
      "dirty tracking primitives\n"
      "  soft_dirty     no   bit 55 stayed 0\n"
      "\n"
      "dirty tracking backends\n"
      "  pagemap-scan   no   missing uffd_wp_async\n"
      "  full           yes  always\n";
  CHECK(ToTable(Sample()) == want);
}

TEST_CASE("ToTable says so when release and THP are unknown") {
  KernelCaps caps;
  CHECK(ToTable(caps) == "kernel (unknown), page size 0, transparent hugepages (none)\n");
}

TEST_CASE("ToJson is complete and pretty-printed") {
  const std::string want =
      "{\n"
      "  \"kernel_release\": \"6.18.0-test\",\n"
      "  \"page_size\": 4096,\n"
      "  \"thp_mode\": \"madvise\",\n"
      "  \"features\": [\n"
      "    {\"section\": \"userfaultfd\", \"name\": \"userfaultfd\", \"available\": true, "
      "\"reason\": \"userfaultfd(2) + UFFDIO_API: api 0xaa\"},\n"
      "    {\"section\": \"userfaultfd\", \"name\": \"uffd_wp_async\", \"available\": false, "
      "\"reason\": \"UFFDIO_API does not report it\"},\n"
      "    {\"section\": \"dirty tracking primitives\", \"name\": \"soft_dirty\", \"available\": "
      "false, \"reason\": \"bit 55 stayed 0\"}\n"
      "  ],\n"
      "  \"dirty_backends\": [\n"
      "    {\"section\": \"dirty tracking backends\", \"name\": \"pagemap-scan\", \"available\": "
      "false, \"reason\": \"missing uffd_wp_async\"},\n"
      "    {\"section\": \"dirty tracking backends\", \"name\": \"full\", \"available\": true, "
      "\"reason\": \"always\"}\n"
      "  ]\n"
      "}\n";
  CHECK(ToJson(Sample()) == want);
}

TEST_CASE("ToJson escapes quotes, backslashes and control characters") {
  KernelCaps caps;
  caps.kernel_release = std::string("a\"b\\c\nd\te\x01") + "f\x1f" + "\xc3\xa9";
  CHECK(ToJson(caps) ==
        "{\n"
        "  \"kernel_release\": \"a\\\"b\\\\c\\nd\\te\\u0001f\\u001f\xc3\xa9\",\n"
        "  \"page_size\": 0,\n"
        "  \"thp_mode\": \"\",\n"
        "  \"features\": [],\n"
        "  \"dirty_backends\": []\n"
        "}\n");
}

}  // namespace
}  // namespace procmig
