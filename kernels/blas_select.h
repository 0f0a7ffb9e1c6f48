// Which OpenBLAS kernels ("core") this process runs, chosen from the CPU's features at
// start-up. Debian 12's OpenBLAS 0.3.21 does not know every CPU (it runs generic SSE3
// "Prescott" kernels on Sapphire Rapids, ~4x slower fp32 prefill than its SkylakeX
// kernels), and it reads OPENBLAS_CORETYPE only when the library loads, before main: so
// applying a choice means re-executing the process once with the variable set.
//
// Environment:
//   OPENBLAS_CORETYPE   set by the user: always respected, never re-executed for.
//   KVSPAN_BLAS_CORE    auto (default): choose from the CPU's features;
//                       native: keep OpenBLAS's own detection;
//                       NAME: run OpenBLAS core NAME (e.g. Haswell, SkylakeX).
//   KVSPAN_BLAS_REEXEC  set by kvspan on the re-execution (its value: the core OpenBLAS
//                       detected by itself); its presence prevents a second exec.
#ifndef KVSPAN_KERNELS_BLAS_SELECT_H_
#define KVSPAN_KERNELS_BLAS_SELECT_H_

#include <optional>
#include <string>

#include "common/cpu_features.h"

namespace kvspan::kernels {

inline constexpr char kOpenBlasCoreTypeEnv[] = "OPENBLAS_CORETYPE";
inline constexpr char kBlasCoreEnv[] = "KVSPAN_BLAS_CORE";
inline constexpr char kBlasReexecEnv[] = "KVSPAN_BLAS_REEXEC";

// The three variables above; nullopt = unset.
struct BlasEnvironment {
  std::optional<std::string> openblas_coretype;
  std::optional<std::string> blas_core;
  std::optional<std::string> reexec;
};

// Reads the variables from this process's environment. Thread-safe if nothing calls
// setenv concurrently.
BlasEnvironment ReadBlasEnvironment();

struct BlasCoreChoice {
  // Non-empty: re-execute with OPENBLAS_CORETYPE=exec_core (and KVSPAN_BLAS_REEXEC).
  std::string exec_core;
  // The core OpenBLAS should report once the choice is applied; empty = whatever it picks.
  std::string expected_core;
  // Why, for the start-up line: "chosen: avx512f/bw/vl; OpenBLAS by itself detects this
  // CPU as Prescott", "OPENBLAS_CORETYPE set by the user", ...
  std::string reason;
};

// The decision, a pure function. `native_core` is the core OpenBLAS loaded with in this
// process (BlasCoreName()); after the re-execution it is env.reexec's value instead.
// auto picks SkylakeX with avx512f+bw+vl, Haswell with avx2+fma, else nothing, and
// re-executes only when OpenBLAS's own core ranks below that pick (an unknown name ranks
// lowest; Cooperlake and SapphireRapids rank above SkylakeX). It never picks Cooperlake:
// 0.3.21 rejects that name in OPENBLAS_CORETYPE, and its fp32 kernels are SkylakeX's.
// Thread-safe.
BlasCoreChoice ChooseBlasCore(const CpuFeatures& cpu, const BlasEnvironment& env,
                              const std::string& native_core);

// openblas_get_corename(): the core OpenBLAS runs in this process. Thread-safe.
std::string BlasCoreName();

// The start-up line (without a program prefix): "CPU <brand>: <features>; OpenBLAS core
// <running_core> (<reason>)", plus "; asked for X, OpenBLAS runs Y" when the expected core
// is not the one running, plus `note` when non-empty. Thread-safe.
std::string BlasStartupLine(const CpuFeatures& cpu, const BlasCoreChoice& choice,
                            const std::string& running_core, const std::string& note);

// Call first thing in main(), before threads or files exist. Decides as above; when the
// decision is to re-execute, sets OPENBLAS_CORETYPE and KVSPAN_BLAS_REEXEC and execv's
// /proc/self/exe with `argv` (does not return on success). If the exec fails, restores the
// environment and continues with OpenBLAS's own core, saying so. Prints
// "<program>: <start-up line>; matrix kernels <isa> (<reason>)" on stderr (the ISA of
// kvspan's own bf16/int8 kernels, cpu_isa.h's SelectedCpuIsa) and returns that line.
// REQUIRES: argv is main's argv (null-terminated). Not thread-safe (setenv, exec).
std::string SelectBlasCoreAtStartup(const char* program, char** argv);

}  // namespace kvspan::kernels

#endif  // KVSPAN_KERNELS_BLAS_SELECT_H_
