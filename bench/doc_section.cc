#include "bench/doc_section.h"

#include <fstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/string_view.h"
#include "common/file_util.h"

namespace kvspan::bench {

absl::Status WriteDocSection(const std::string& path, const std::string& name,
                             const std::string& body) {
  absl::StatusOr<std::string> existing = ReadFile(path);
  std::string text = existing.ok() ? *std::move(existing) : std::string();
  const std::string begin = absl::StrCat("<!-- BEGIN ", name, " -->\n");
  const std::string end = absl::StrCat("<!-- END ", name, " -->\n");
  const std::string section = absl::StrCat(begin, body, body.empty() || body.back() == '\n' ? "" : "\n", end);
  const size_t b = text.find(begin);
  const size_t e = b == std::string::npos ? std::string::npos : text.find(end, b);
  if (b != std::string::npos && e != std::string::npos) {
    text.replace(b, e + end.size() - b, section);
  } else {
    if (!text.empty() && text.back() != '\n') text += '\n';
    if (!text.empty()) text += '\n';
    text += section;
  }
  return WriteFile(path, text);
}

std::string CommandLine(int argc, char** argv) {
  std::string cmd;
  for (int i = 0; i < argc; ++i) {
    const absl::string_view arg = argv[i];
    const bool plain = !arg.empty() && arg.find_first_not_of(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-./=:,+@%") == absl::string_view::npos;
    // Single quotes keep everything but a single quote, which becomes '\''.
    absl::StrAppend(&cmd, i ? " " : "",
                    plain ? std::string(arg) : absl::StrCat("'", absl::StrReplaceAll(arg, {{"'", "'\\''"}}), "'"));
  }
  return cmd;
}

std::string LoadAverage() {
  std::ifstream in("/proc/loadavg");
  std::string one;
  in >> one;
  return one.empty() ? "unknown" : one;
}

std::string CpuModel() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  }
  return "unknown CPU";
}

}  // namespace kvspan::bench
