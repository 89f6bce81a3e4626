// coco-guest-exec: TEST-ONLY remote shell for the VM-harness guest.
//
// Listens on TCP, forks one child per connection, reads one request (see
// exec_protocol.h), runs it with /bin/sh -c in a new session, and answers with
// the exit status and the captured output. Anyone who reaches the port is
// root in the guest: this binary must never ship in a product image.
//
//   coco-guest-exec [--port=7000] [--bind=0.0.0.0]
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include "exec_protocol.h"

namespace {

using cocostorage::vmtest::kExecFlagMergeOutput;
using cocostorage::vmtest::kExecMagic;
using cocostorage::vmtest::kExecMaxPayload;

int64_t NowMs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

bool WriteAll(int fd, const void* data, size_t len) {
  const char* p = static_cast<const char*>(data);
  while (len > 0) {
    ssize_t n = write(fd, p, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    p += n;
    len -= static_cast<size_t>(n);
  }
  return true;
}

bool ReadAll(int fd, void* data, size_t len) {
  char* p = static_cast<char*>(data);
  while (len > 0) {
    ssize_t n = read(fd, p, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    p += n;
    len -= static_cast<size_t>(n);
  }
  return true;
}

bool ReadU32(int fd, uint32_t* v) {
  uint32_t be = 0;
  if (!ReadAll(fd, &be, sizeof be)) return false;
  *v = ntohl(be);
  return true;
}

void PutU32(std::string& out, uint32_t v) {
  uint32_t be = htonl(v);
  out.append(reinterpret_cast<const char*>(&be), sizeof be);
}

bool ReadBlob(int fd, std::string* s) {
  uint32_t len = 0;
  if (!ReadU32(fd, &len) || len > kExecMaxPayload) return false;
  s->resize(len);
  return len == 0 || ReadAll(fd, s->data(), len);
}

struct Outcome {
  int exit_code = -1;
  int term_signal = 0;
  bool timed_out = false;
  std::string out;
  std::string err;
};

void SetNonBlock(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

Outcome Run(const std::string& cmd, const std::string& input, uint32_t timeout_ms, bool merge) {
  Outcome o;
  int in_p[2], out_p[2], err_p[2];
  if (pipe2(in_p, O_CLOEXEC) != 0 || pipe2(out_p, O_CLOEXEC) != 0 || pipe2(err_p, O_CLOEXEC) != 0) {
    o.err = std::string("guest-exec: pipe: ") + strerror(errno);
    return o;
  }
  pid_t pid = fork();
  if (pid < 0) {
    o.err = std::string("guest-exec: fork: ") + strerror(errno);
    return o;
  }
  if (pid == 0) {
    setsid();
    dup2(in_p[0], 0);
    dup2(out_p[1], 1);
    dup2(merge ? out_p[1] : err_p[1], 2);
    signal(SIGPIPE, SIG_DFL);
    execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  close(in_p[0]);
  close(out_p[1]);
  close(err_p[1]);
  SetNonBlock(in_p[1]);
  SetNonBlock(out_p[0]);
  SetNonBlock(err_p[0]);
  int in_fd = in_p[1];
  int out_fd = out_p[0];
  int err_fd = err_p[0];
  size_t in_off = 0;
  if (input.empty()) {
    close(in_fd);
    in_fd = -1;
  }
  const int64_t deadline = timeout_ms ? NowMs() + timeout_ms : 0;
  char buf[65536];
  while (out_fd >= 0 || err_fd >= 0) {
    pollfd fds[3];
    int n = 0;
    int out_i = -1, err_i = -1, in_i = -1;
    if (out_fd >= 0) {
      out_i = n;
      fds[n++] = {out_fd, POLLIN, 0};
    }
    if (err_fd >= 0) {
      err_i = n;
      fds[n++] = {err_fd, POLLIN, 0};
    }
    if (in_fd >= 0) {
      in_i = n;
      fds[n++] = {in_fd, POLLOUT, 0};
    }
    int wait_ms = -1;
    if (deadline) {
      int64_t left = deadline - NowMs();
      if (left <= 0) {
        o.timed_out = true;
        kill(-pid, SIGKILL);
        break;
      }
      wait_ms = static_cast<int>(left);
    }
    int r = poll(fds, static_cast<nfds_t>(n), wait_ms);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) break;
    auto drain = [&](int idx, int& fd, std::string& sink) {
      if (idx < 0 || !(fds[idx].revents & (POLLIN | POLLHUP | POLLERR))) return;
      ssize_t k = read(fd, buf, sizeof buf);
      if (k > 0) {
        if (sink.size() < kExecMaxPayload) sink.append(buf, static_cast<size_t>(k));
      } else if (k == 0 || (errno != EAGAIN && errno != EINTR)) {
        close(fd);
        fd = -1;
      }
    };
    drain(out_i, out_fd, o.out);
    drain(err_i, err_fd, o.err);
    if (in_i >= 0 && (fds[in_i].revents & (POLLOUT | POLLERR | POLLHUP))) {
      ssize_t k = write(in_fd, input.data() + in_off, input.size() - in_off);
      if (k > 0) in_off += static_cast<size_t>(k);
      if ((k < 0 && errno != EAGAIN && errno != EINTR) || in_off == input.size()) {
        close(in_fd);
        in_fd = -1;
      }
    }
  }
  if (in_fd >= 0) close(in_fd);
  if (out_fd >= 0) close(out_fd);
  if (err_fd >= 0) close(err_fd);
  // Output closed: the shell is exiting (or a daemon it started kept the
  // pipes, which we no longer wait for). Wait for the shell itself.
  int status = 0;
  for (;;) {
    pid_t w = waitpid(pid, &status, deadline ? WNOHANG : 0);
    if (w == pid) break;
    if (w < 0 && errno != EINTR) return o;
    if (w == 0) {
      if (NowMs() >= deadline) {
        o.timed_out = true;
        kill(-pid, SIGKILL);
        waitpid(pid, &status, 0);
        break;
      }
      usleep(10000);
    }
  }
  if (WIFEXITED(status)) {
    o.exit_code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    o.term_signal = WTERMSIG(status);
  }
  return o;
}

void Serve(int conn) {
  uint32_t magic = 0, timeout_ms = 0, flags = 0;
  std::string cmd, input;
  if (!ReadU32(conn, &magic) || magic != kExecMagic || !ReadU32(conn, &timeout_ms) || !ReadU32(conn, &flags) ||
      !ReadBlob(conn, &cmd) || !ReadBlob(conn, &input)) {
    return;
  }
  Outcome o = Run(cmd, input, timeout_ms, (flags & kExecFlagMergeOutput) != 0);
  std::string resp;
  PutU32(resp, kExecMagic);
  PutU32(resp, static_cast<uint32_t>(o.exit_code));
  PutU32(resp, static_cast<uint32_t>(o.term_signal));
  PutU32(resp, o.timed_out ? 1 : 0);
  PutU32(resp, static_cast<uint32_t>(o.out.size()));
  resp += o.out;
  PutU32(resp, static_cast<uint32_t>(o.err.size()));
  resp += o.err;
  WriteAll(conn, resp.data(), resp.size());
}

}  // namespace

int main(int argc, char** argv) {
  int port = 7000;
  std::string bind_addr = "0.0.0.0";
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a.rfind("--port=", 0) == 0) {
      port = atoi(argv[i] + 7);
    } else if (a.rfind("--bind=", 0) == 0) {
      bind_addr = argv[i] + 7;
    } else {
      fprintf(stderr, "usage: %s [--port=N] [--bind=ADDR]\n", argv[0]);
      return 2;
    }
  }
  signal(SIGPIPE, SIG_IGN);
  signal(SIGCHLD, SIG_IGN);  // connection children are reaped automatically
  int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s < 0) {
    perror("guest-exec: socket");
    return 1;
  }
  int one = 1;
  setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (inet_pton(AF_INET, bind_addr.c_str(), &addr.sin_addr) != 1) {
    fprintf(stderr, "guest-exec: bad --bind address %s\n", bind_addr.c_str());
    return 2;
  }
  if (bind(s, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || listen(s, 64) != 0) {
    perror("guest-exec: bind/listen");
    return 1;
  }
  fprintf(stderr, "guest-exec: listening on %s:%d (TEST ONLY)\n", bind_addr.c_str(), port);
  for (;;) {
    int c = accept4(s, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      perror("guest-exec: accept");
      sleep(1);
      continue;
    }
    pid_t pid = fork();
    if (pid == 0) {
      close(s);
      signal(SIGCHLD, SIG_DFL);  // this child waits for its command
      setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      Serve(c);
      close(c);
      _exit(0);
    }
    close(c);
  }
}
