// Running helper programs (mkfs, blkid...) without a shell.
//
// Arguments are passed as a vector straight to execve: nothing a request
// contains is ever interpreted by a shell. CommandRunner is the seam that
// unit tests replace with a fake.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "cocostorage/common/status.h"

namespace cocostorage {

struct CommandResult {
  int exit_code = -1;   // -1 when killed by a signal
  int term_signal = 0;  // signal number when killed
  std::string out;      // stdout, truncated to a bounded size
  std::string err;      // stderr, truncated to a bounded size
};

struct CommandSpec {
  std::vector<std::string> argv;  // argv[0] is an absolute path or a name found on PATH
  std::chrono::milliseconds timeout{std::chrono::minutes(10)};
  std::vector<std::string> env;  // extra KEY=VALUE entries; inherits the rest
};

class CommandRunner {
 public:
  virtual ~CommandRunner() = default;
  // Returns an error only when the command could not be run or timed out; a
  // non-zero exit is reported in CommandResult.
  virtual StatusOr<CommandResult> Run(const CommandSpec& spec) = 0;
};

std::unique_ptr<CommandRunner> NewSystemCommandRunner();

// "mkfs.ext4 exited 1: <last line of stderr>" for error messages.
std::string DescribeFailure(const CommandSpec& spec, const CommandResult& result);

}  // namespace cocostorage
