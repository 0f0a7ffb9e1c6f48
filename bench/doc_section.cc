#include "bench/doc_section.h"

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace kvspan::bench {

absl::Status WriteDocSection(const std::string& path, const std::string& name,
                             const std::string& body) {
  std::string text;
  {
    std::ifstream in(path, std::ios::binary);
    if (in) {
      std::stringstream ss;
      ss << in.rdbuf();
      text = ss.str();
    }
  }
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
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return absl::UnavailableError(absl::StrCat("cannot write ", path));
  out << text;
  out.close();
  if (!out) return absl::UnavailableError(absl::StrCat("error writing ", path));
  return absl::OkStatus();
}

std::string CommandLine(int argc, char** argv) {
  std::string cmd;
  for (int i = 0; i < argc; ++i) absl::StrAppend(&cmd, i ? " " : "", argv[i]);
  return cmd;
}

}  // namespace kvspan::bench
