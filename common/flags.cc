#include "common/flags.h"

#include <cstdio>
#include <cstdlib>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace kvspan {

FlagSet::FlagSet(std::string program, std::string description)
    : program_(std::move(program)), description_(std::move(description)) {}

namespace {
bool check_flags_only = false;

absl::Status BadValue(const std::string& name, const std::string& value, const char* kind) {
  return absl::InvalidArgumentError(
      absl::StrCat("flag --", name, ": '", value, "' is not ", kind));
}
}  // namespace

void SetCheckFlagsOnly(bool check_only) { check_flags_only = check_only; }

void FlagSet::Add(const std::string& name, std::string* target, const std::string& help) {
  flags_.push_back({name, help, *target, false, [target](const std::string& v) {
                      *target = v;
                      return absl::OkStatus();
                    }});
}

void FlagSet::Add(const std::string& name, int* target, const std::string& help) {
  flags_.push_back({name, help, absl::StrCat(*target), false, [target, name](const std::string& v) {
                      if (!absl::SimpleAtoi(v, target)) return BadValue(name, v, "an integer");
                      return absl::OkStatus();
                    }});
}

void FlagSet::Add(const std::string& name, int64_t* target, const std::string& help) {
  flags_.push_back({name, help, absl::StrCat(*target), false, [target, name](const std::string& v) {
                      if (!absl::SimpleAtoi(v, target)) return BadValue(name, v, "an integer");
                      return absl::OkStatus();
                    }});
}

void FlagSet::Add(const std::string& name, double* target, const std::string& help) {
  flags_.push_back({name, help, absl::StrCat(*target), false, [target, name](const std::string& v) {
                      if (!absl::SimpleAtod(v, target)) return BadValue(name, v, "a number");
                      return absl::OkStatus();
                    }});
}

void FlagSet::Add(const std::string& name, bool* target, const std::string& help) {
  flags_.push_back({name, help, *target ? "true" : "false", true,
                    [target, name](const std::string& v) {
                      if (!absl::SimpleAtob(v, target)) return BadValue(name, v, "a boolean");
                      return absl::OkStatus();
                    }});
}

void FlagSet::Add(const std::string& name, std::function<absl::Status(const std::string&)> set,
                  const std::string& default_value, const std::string& help) {
  flags_.push_back({name, help, default_value, false, std::move(set)});
}

void FlagSet::Add(const std::string& name, std::vector<std::string>* target,
                  const std::string& help) {
  flags_.push_back({name, help, "", false, [target](const std::string& v) {
                      target->push_back(v);
                      return absl::OkStatus();
                    }});
}

const FlagSet::Flag* FlagSet::Find(const std::string& name) const {
  for (const Flag& f : flags_) {
    if (f.name == name) return &f;
  }
  return nullptr;
}

absl::Status FlagSet::Parse(int argc, const char* const* argv) {
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      help_requested_ = true;
      continue;
    }
    if (arg.rfind("--", 0) != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(program_, ": unexpected argument '", arg, "' (see --help)"));
    }
    std::string name = arg.substr(2);
    std::string value;
    bool has_value = false;
    if (size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    const Flag* flag = Find(name);
    if (flag == nullptr && !has_value && name.rfind("no-", 0) == 0) {
      const Flag* negated = Find(name.substr(3));
      if (negated != nullptr && negated->is_bool) {
        absl::Status s = negated->set("false");
        if (!s.ok()) return s;
        continue;
      }
    }
    if (flag == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat(program_, ": unknown flag --", name, " (see --help)"));
    }
    if (!has_value) {
      if (flag->is_bool) {
        value = "true";
      } else if (i + 1 < argc) {
        value = argv[++i];
      } else {
        return absl::InvalidArgumentError(absl::StrCat("flag --", name, " needs a value"));
      }
    }
    absl::Status s = flag->set(value);
    if (!s.ok()) return s;
  }
  if (check_flags_only && !help_requested_) {
    std::printf("%s: flags ok\n", program_.c_str());
    std::fflush(stdout);
    std::exit(0);
  }
  return absl::OkStatus();
}

std::string FlagSet::Usage() const {
  std::string out = absl::StrCat("usage: ", program_, " [flags]\n", description_, "\n\nflags:\n");
  for (const Flag& f : flags_) {
    absl::StrAppendFormat(&out, "  --%-22s %s", f.name, f.help);
    if (!f.default_value.empty()) absl::StrAppend(&out, " (default: ", f.default_value, ")");
    absl::StrAppend(&out, "\n");
  }
  return out;
}

std::optional<int> FlagSet::ParseOrExitCode(int argc, const char* const* argv) {
  if (absl::Status s = Parse(argc, argv); !s.ok()) {
    std::fprintf(stderr, "%s\n", std::string(s.message()).c_str());
    return 2;
  }
  if (help_requested_) {
    std::fputs(Usage().c_str(), stdout);
    return 0;
  }
  return std::nullopt;
}

}  // namespace kvspan
