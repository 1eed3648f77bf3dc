#include "tests/support/pki.h"

#include <fstream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tests/support/process.h"

namespace ftune::testing {
namespace {

absl::Status Openssl(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {kOpensslPath};
  argv.insert(argv.end(), args.begin(), args.end());
  auto result = RunCommand(argv, absl::Seconds(60));
  if (!result.ok()) return result.status();
  if (result->exit_code != 0) {
    return absl::InternalError(absl::StrCat("openssl ", args[0], " failed: ", result->out));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status MakeTestPki(const std::string& dir) {
  absl::Status s =
      Openssl({"req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
               "/CN=ftune test CA", "-keyout", dir + "/ca.key", "-out", dir + "/ca.pem"});
  if (!s.ok()) return s;
  std::ofstream(dir + "/server.ext") << "subjectAltName=IP:127.0.0.1,DNS:localhost\n";
  for (const std::string name : {"server", "client"}) {
    s = Openssl({"req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=" + name, "-keyout",
                 dir + "/" + name + ".key", "-out", dir + "/" + name + ".csr"});
    if (!s.ok()) return s;
    std::vector<std::string> sign = {"x509",
                                     "-req",
                                     "-in",
                                     dir + "/" + name + ".csr",
                                     "-CA",
                                     dir + "/ca.pem",
                                     "-CAkey",
                                     dir + "/ca.key",
                                     "-CAcreateserial",
                                     "-days",
                                     "2",
                                     "-out",
                                     dir + "/" + name + ".pem"};
    if (name == "server") {
      sign.push_back("-extfile");
      sign.push_back(dir + "/server.ext");
    }
    s = Openssl(sign);
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

}  // namespace ftune::testing
