// Where a worker tells the controller that its rank 0 of a data-parallel job can be reached.
#pragma once

#include <string>

namespace ftune::daemon {

// The first IPv4 address of an interface that is up and not loopback (in the order the kernel
// lists them), else `host_name`. Not the host name first: Debian maps it to 127.0.1.1 in
// /etc/hosts, which other machines cannot reach. A box with several addresses should say which
// with ftworker run --rendezvous-host.
std::string DefaultRendezvousHost(const std::string& host_name);

}  // namespace ftune::daemon
