// A small command-line parser for one subcommand's flags. Each `kvspan <role>`
// declares its own FlagSet, so roles can share flag names (--listen, --model) without a
// process-wide registry.
//   FlagSet flags("kvspan generate", "Generates text with a model.");
//   std::string model;  int max_tokens = 128;
//   flags.Add("model", &model, "model directory");
//   flags.Add("max-tokens", &max_tokens, "tokens to generate");
//   absl::Status s = flags.Parse(argc, argv);  // argv[0] is the subcommand
// Accepts --name=value, --name value, and --name / --no-name for bools; --help sets
// help_requested(). Not thread-safe.
//
// Check-only mode (`kvspan <command> --check-flags ...`, turned on by node/main.cc): the
// command's own Parse runs exactly as at a real start, and when it succeeds it prints
// "<program>: flags ok" and exits the process with 0, before anything starts. A flag error
// returns from Parse as usual (the commands exit 2). Checks a command makes after Parse
// (e.g. cachestore's required --data) are not covered.
#ifndef KVSPAN_COMMON_FLAGS_H_
#define KVSPAN_COMMON_FLAGS_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace kvspan {

// Turns check-only mode on for every FlagSet::Parse that follows. Call before any thread starts.
void SetCheckFlagsOnly(bool check_only);

class FlagSet {
 public:
  FlagSet(std::string program, std::string description);

  // Registers a flag writing into *target (borrowed: must outlive Parse). The value
  // already in *target is the default shown by Usage().
  void Add(const std::string& name, std::string* target, const std::string& help);
  void Add(const std::string& name, int* target, const std::string& help);
  void Add(const std::string& name, int64_t* target, const std::string& help);
  void Add(const std::string& name, double* target, const std::string& help);
  void Add(const std::string& name, bool* target, const std::string& help);
  // A flag that may be given several times, each value appended.
  void Add(const std::string& name, std::vector<std::string>* target, const std::string& help);
  // A flag of any type: Parse calls set(value) and returns its error as the flag's error
  // (set's message should name the flag). Usage() shows `default_value`.
  void Add(const std::string& name, std::function<absl::Status(const std::string&)> set,
           const std::string& default_value, const std::string& help);

  // Parses argv[1..argc). Returns InvalidArgument naming the flag for an unknown flag,
  // a missing value, a malformed number or an unexpected positional argument.
  // NOTE: in check-only mode a successful Parse (without --help) does not return: it exits 0.
  absl::Status Parse(int argc, const char* const* argv);

  // Parse as a command's main runs it: on a flag error prints the message to stderr and
  // returns 2; with --help prints Usage() to stdout and returns 0; otherwise nullopt (go on).
  std::optional<int> ParseOrExitCode(int argc, const char* const* argv);

  bool help_requested() const { return help_requested_; }
  // Usage text: program, description, and one line per flag with its default.
  std::string Usage() const;

 private:
  struct Flag {
    std::string name;
    std::string help;
    std::string default_value;
    bool is_bool = false;
    std::function<absl::Status(const std::string&)> set;
  };
  const Flag* Find(const std::string& name) const;

  std::string program_;
  std::string description_;
  std::vector<Flag> flags_;
  bool help_requested_ = false;
};

}  // namespace kvspan

#endif  // KVSPAN_COMMON_FLAGS_H_
