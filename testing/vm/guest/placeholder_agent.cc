// Stand-in for cocostorage-agent in harness self-tests while the real agent
// does not exist (or when a test wants an agent-less guest). It logs its
// arguments and COCO_* environment, listens on the --listen=tcp://HOST:PORT
// address and closes every connection it accepts.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

extern char** environ;

int main(int argc, char** argv) {
  int port = 7001;
  std::printf("placeholder-agent: started:");
  for (int i = 1; i < argc; ++i) {
    std::printf(" %s", argv[i]);
    std::string a = argv[i];
    const std::string prefix = "--listen=tcp://";
    if (a.rfind(prefix, 0) == 0) {
      size_t colon = a.rfind(':');
      if (colon != std::string::npos && colon > prefix.size()) port = std::atoi(a.c_str() + colon + 1);
    }
  }
  std::printf("\n");
  for (char** e = environ; *e != nullptr; ++e) {
    if (std::strncmp(*e, "COCO", 4) == 0) std::printf("placeholder-agent: env %s\n", *e);
  }
  std::fflush(stdout);
  int s = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_ANY);
  if (bind(s, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || listen(s, 16) != 0) {
    std::perror("placeholder-agent: bind/listen");
    return 1;
  }
  for (;;) {
    int c = accept(s, nullptr, nullptr);
    if (c >= 0) close(c);
  }
}
