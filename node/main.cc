// kvspan: one binary, one subcommand per role (DESIGN.md, "Data flow").
#include <cstdio>
#include <cstring>

#include "common/flags.h"
#include "common/logging.h"
#include "kernels/blas_select.h"
#include "node/commands.h"

namespace {

struct Command {
  const char* name;
  const char* summary;
  int (*run)(int argc, const char* const* argv);
  bool runs_model = false;  // picks the BLAS kernels at start-up and says which
};

constexpr Command kCommands[] = {
    {"serve", "serve the Generate/session gRPC API: every role in one process", kvspan::node::RunServe, true},
    {"prefill", "a prefill worker of a disaggregated cluster (kvspan.v1.Prefill)", kvspan::node::RunPrefill, true},
    {"decode", "a decode worker of a disaggregated cluster (kvspan.v1.Decode)", kvspan::node::RunDecode, true},
    {"frontend", "the Generate/session API of a disaggregated cluster, routing to its workers",
     kvspan::node::RunFrontend},
    {"generate", "generate text with a model on this machine's CPU", kvspan::node::RunGenerate, true},
    {"cachestore", "serve the compressed-span cache store over gRPC", kvspan::node::RunCachestore},
    {"calibrate-razor", "find a model's RazorAttention retrieval heads (writes a heads file)",
     kvspan::node::RunCalibrateRazor, true},
    {"client", "send one Generate call to a `kvspan serve` and stream the text", kvspan::node::RunClient},
    {"chat", "a multi-turn session with a `kvspan serve`, one turn per line of stdin",
     kvspan::node::RunChat},
};

void PrintUsage(FILE* out) {
  std::fprintf(out, "usage: kvspan <command> [flags]   (kvspan <command> --help for its flags)\n\ncommands:\n");
  for (const Command& c : kCommands) std::fprintf(out, "  %-16s %s\n", c.name, c.summary);
}

}  // namespace

int main(int argc, char** argv) {
  // `kvspan <command> --check-flags ...`: the command parses its flags as a real start does
  // and exits (0, or 2 on a flag error) without starting (common/flags.h). The flag is taken
  // out of argv here, so every command has it without declaring it.
  bool check_flags = false;
  for (int i = 2; i < argc; ++i) {
    if (std::strcmp(argv[i], "--check-flags") != 0) continue;
    check_flags = true;
    for (int j = i; j + 1 <= argc; ++j) argv[j] = argv[j + 1];  // argv[argc] is nullptr
    --argc;
    --i;
  }
  kvspan::SetCheckFlagsOnly(check_flags);
  // Commands that run the model first pick the BLAS kernels: this may re-execute the
  // process with OPENBLAS_CORETYPE set (kernels/blas_select.h). Clients and the store don't.
  for (const Command& c : kCommands) {
    if (argc >= 2 && c.runs_model && !check_flags && std::strcmp(argv[1], c.name) == 0) {
      kvspan::kernels::SelectBlasCoreAtStartup("kvspan", argv);
    }
  }
  kvspan::InitLogging(argv[0]);
  if (argc < 2) {
    PrintUsage(stderr);
    return 2;
  }
  if (std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0 ||
      std::strcmp(argv[1], "help") == 0) {
    PrintUsage(stdout);
    return 0;
  }
  for (const Command& c : kCommands) {
    if (std::strcmp(argv[1], c.name) == 0) return c.run(argc - 1, argv + 1);
  }
  std::fprintf(stderr, "kvspan: unknown command '%s'\n\n", argv[1]);
  PrintUsage(stderr);
  return 2;
}
