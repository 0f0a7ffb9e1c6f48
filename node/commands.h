// The subcommands of the `kvspan` binary. Each returns the process exit code:
// 0 on success, 1 on a runtime error, 2 on a usage error (bad flags).
// argv[0] is the subcommand name; flags follow.
#ifndef KVSPAN_NODE_COMMANDS_H_
#define KVSPAN_NODE_COMMANDS_H_

namespace kvspan::node {

int RunGenerate(int argc, const char* const* argv);        // generate_command.cc
int RunCachestore(int argc, const char* const* argv);      // cachestore_command.cc
int RunCalibrateRazor(int argc, const char* const* argv);  // calibrate_razor_command.cc
int RunServe(int argc, const char* const* argv);           // serve_command.cc
int RunPrefill(int argc, const char* const* argv);         // serve_command.cc
int RunDecode(int argc, const char* const* argv);          // serve_command.cc
int RunFrontend(int argc, const char* const* argv);        // serve_command.cc
int RunClient(int argc, const char* const* argv);          // client_command.cc
int RunChat(int argc, const char* const* argv);            // chat_command.cc

}  // namespace kvspan::node

#endif  // KVSPAN_NODE_COMMANDS_H_
