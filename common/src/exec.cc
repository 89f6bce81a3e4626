#include "cocostorage/common/exec.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "cocostorage/common/strings.h"
#include "cocostorage/common/unique_fd.h"

extern char** environ;

namespace cocostorage {
namespace {

constexpr size_t kMaxCapture = 1 << 20;

class SystemCommandRunner : public CommandRunner {
 public:
  StatusOr<CommandResult> Run(const CommandSpec& spec) override {
    if (spec.argv.empty()) return absl::InvalidArgumentError("empty command");
    int out_pipe[2];
    int err_pipe[2];
    if (pipe2(out_pipe, O_CLOEXEC) != 0) return ErrnoStatus(errno, "pipe");
    UniqueFd out_r(out_pipe[0]), out_w(out_pipe[1]);
    if (pipe2(err_pipe, O_CLOEXEC) != 0) return ErrnoStatus(errno, "pipe");
    UniqueFd err_r(err_pipe[0]), err_w(err_pipe[1]);

    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&actions, out_w.get(), 1);
    posix_spawn_file_actions_adddup2(&actions, err_w.get(), 2);

    std::vector<char*> argv;
    for (const auto& a : spec.argv) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    std::vector<std::string> env_storage;
    for (char** e = environ; e != nullptr && *e != nullptr; ++e) env_storage.emplace_back(*e);
    for (const auto& e : spec.env) env_storage.push_back(e);
    std::vector<char*> envp;
    for (auto& e : env_storage) envp.push_back(e.data());
    envp.push_back(nullptr);

    // The agent blocks SIGTERM/SIGINT in every thread (it sigwait()s for
    // them) and gRPC ignores SIGPIPE; a child must not inherit either, or a
    // timeout's SIGKILL would be its only way to stop.
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    sigset_t empty;
    sigemptyset(&empty);
    sigset_t defaults;
    sigemptyset(&defaults);
    for (int sig : {SIGTERM, SIGINT, SIGPIPE, SIGHUP, SIGQUIT, SIGCHLD}) sigaddset(&defaults, sig);
    posix_spawnattr_setsigmask(&attr, &empty);
    posix_spawnattr_setsigdefault(&attr, &defaults);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);

    pid_t pid = -1;
    int rc = posix_spawnp(&pid, argv[0], &actions, &attr, argv.data(), envp.data());
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
    if (rc != 0) return ErrnoStatus(rc, Cat("starting ", spec.argv[0]));
    out_w.Reset();
    err_w.Reset();

    CommandResult result;
    auto deadline = std::chrono::steady_clock::now() + spec.timeout;
    bool timed_out = false;
    pollfd fds[2] = {{out_r.get(), POLLIN, 0}, {err_r.get(), POLLIN, 0}};
    int open_fds = 2;
    char buf[8192];
    while (open_fds > 0) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) {
        timed_out = true;
        break;
      }
      int n = poll(fds, 2, static_cast<int>(left.count()));
      if (n < 0) {
        if (errno == EINTR) continue;
        break;
      }
      for (int i = 0; i < 2; ++i) {
        if (fds[i].fd < 0 || fds[i].revents == 0) continue;
        ssize_t r = read(fds[i].fd, buf, sizeof(buf));
        if (r <= 0) {
          fds[i].fd = -1;
          --open_fds;
          continue;
        }
        std::string& dst = i == 0 ? result.out : result.err;
        if (dst.size() < kMaxCapture) dst.append(buf, static_cast<size_t>(r));
      }
    }
    if (timed_out) kill(pid, SIGKILL);
    int wstatus = 0;
    while (waitpid(pid, &wstatus, 0) < 0 && errno == EINTR) {
    }
    if (timed_out) {
      return absl::DeadlineExceededError(Cat(spec.argv[0], " did not finish within ", spec.timeout.count(), " ms"));
    }
    if (WIFEXITED(wstatus)) {
      result.exit_code = WEXITSTATUS(wstatus);
    } else if (WIFSIGNALED(wstatus)) {
      result.term_signal = WTERMSIG(wstatus);
    }
    return result;
  }
};

}  // namespace

std::unique_ptr<CommandRunner> NewSystemCommandRunner() { return std::make_unique<SystemCommandRunner>(); }

std::string DescribeFailure(const CommandSpec& spec, const CommandResult& result) {
  std::string tail = result.err.empty() ? result.out : result.err;
  while (!tail.empty() && (tail.back() == '\n' || tail.back() == ' ')) tail.pop_back();
  auto pos = tail.rfind('\n');
  if (pos != std::string::npos) tail = tail.substr(pos + 1);
  std::string what =
      result.term_signal != 0 ? Cat("was killed by signal ", result.term_signal) : Cat("exited ", result.exit_code);
  return Cat(spec.argv.empty() ? "command" : spec.argv[0], " ", what, tail.empty() ? "" : ": ", tail);
}

}  // namespace cocostorage
