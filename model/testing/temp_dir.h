// A fresh directory under $TEST_TMPDIR (or /tmp), removed with its contents on
// destruction. For tests. Not thread-safe.
#ifndef KVSPAN_MODEL_TESTING_TEMP_DIR_H_
#define KVSPAN_MODEL_TESTING_TEMP_DIR_H_

#include <stdlib.h>

#include <filesystem>
#include <string>

#include "common/logging.h"

namespace kvspan::model::testing {

class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TEST_TMPDIR");
    std::string tmpl = std::string(base != nullptr ? base : "/tmp") + "/kvspan_model_XXXXXX";
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

}  // namespace kvspan::model::testing

#endif  // KVSPAN_MODEL_TESTING_TEMP_DIR_H_
