#include "worker/daemon/rendezvous_host.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>

namespace ftune::daemon {

std::string DefaultRendezvousHost(const std::string& host_name) {
  ifaddrs* addresses = nullptr;
  if (getifaddrs(&addresses) != 0) return host_name;
  std::string found;
  for (const ifaddrs* a = addresses; a != nullptr && found.empty(); a = a->ifa_next) {
    if (a->ifa_addr == nullptr || a->ifa_addr->sa_family != AF_INET) continue;
    if ((a->ifa_flags & IFF_UP) == 0 || (a->ifa_flags & IFF_LOOPBACK) != 0) continue;
    char text[INET_ADDRSTRLEN] = {};
    const in_addr& ip = reinterpret_cast<const sockaddr_in*>(a->ifa_addr)->sin_addr;
    if (inet_ntop(AF_INET, &ip, text, sizeof(text)) != nullptr) found = text;
  }
  freeifaddrs(addresses);
  return found.empty() ? host_name : found;
}

}  // namespace ftune::daemon
