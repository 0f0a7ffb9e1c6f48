// Writes stdin into a marked section of a Markdown file (bench/doc_section.h's WriteDocSection),
// for benchmark scripts that print their tables from the shell (bench/peers/run_peers.sh):
//
//   some_command | build/bench/write_doc_section docs/performance.md peers
#include <cstdio>
#include <iostream>
#include <iterator>
#include <string>

#include "bench/doc_section.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s FILE.md SECTION < body\n", argv[0]);
    return 2;
  }
  const std::string body((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
  if (absl::Status s = kvspan::bench::WriteDocSection(argv[1], argv[2], body); !s.ok()) {
    std::fprintf(stderr, "write_doc_section: %s\n", s.ToString().c_str());
    return 1;
  }
  return 0;
}
