// Test-only: a fresh directory under gtest's temporary directory ($TEST_TMPDIR, else
// /tmp), removed with its contents on destruction. Not thread-safe. Link
// kvspan::common_testing.
#ifndef KVSPAN_COMMON_TEMP_DIR_H_
#define KVSPAN_COMMON_TEMP_DIR_H_

#include <stdlib.h>

#include <filesystem>
#include <string>

#include "common/logging.h"
#include "gtest/gtest.h"

namespace kvspan::testing {

class TempDir {
 public:
  TempDir() {
    std::string tmpl = ::testing::TempDir() + "kvspan_XXXXXX";
    CHECK(::mkdtemp(tmpl.data()) != nullptr) << "mkdtemp " << tmpl;
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  std::string Sub(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

}  // namespace kvspan::testing

#endif  // KVSPAN_COMMON_TEMP_DIR_H_
