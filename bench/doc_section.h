// Benchmarks write their tables into docs/*.md between markers, so several programs can
// share one page without overwriting each other:
//   <!-- BEGIN model_bench -->
//   ...
//   <!-- END model_bench -->
#ifndef KVSPAN_BENCH_DOC_SECTION_H_
#define KVSPAN_BENCH_DOC_SECTION_H_

#include <string>

#include "absl/status/status.h"

namespace kvspan::bench {

// Replaces the section `name` of the Markdown file at `path` with `body` (appending the
// section, with its markers, when the file has none; creating the file when missing).
// Returns WriteFile's errno-derived status (common/file_util.h) on failure.
absl::Status WriteDocSection(const std::string& path, const std::string& name,
                             const std::string& body);

// The command line that reproduces this run, for the docs: argv joined with spaces, an
// argument with characters a shell would read (spaces, quotes, parentheses, ...) in
// single quotes, so the line can be pasted into a shell.
std::string CommandLine(int argc, char** argv);

// Facts about the machine a table was measured on (the machines are shared, so tables
// say how busy they were). The 1-minute load average from /proc/loadavg, and the CPU's
// "model name" from /proc/cpuinfo; "unknown" / "unknown CPU" when unreadable.
std::string LoadAverage();
std::string CpuModel();

}  // namespace kvspan::bench

#endif  // KVSPAN_BENCH_DOC_SECTION_H_
