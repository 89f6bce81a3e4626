#include "request/activation.h"

namespace cocostorage::agent {

const char* OriginName(Origin o) {
  switch (o) {
    case Origin::kAgentApi:
      return "agent-api";
    case Origin::kKataStorage:
      return "kata-storage";
    case Origin::kSecureMount:
      return "secure-mount";
  }
  return "?";
}

}  // namespace cocostorage::agent
