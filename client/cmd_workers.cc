// `ftctl workers`: the workers the controller knows, their devices and jobs.
#include <iostream>
#include <memory>

#include "client/commands.h"
#include "client/output.h"
#include "common/grpc_status.h"

namespace ftune::ctl {

namespace v1 = ::ftune::v1;

void AddWorkersCommand(CLI::App& app, Ctl* ctl) {
  auto json = std::make_shared<bool>(false);
  CLI::App* cmd = app.add_subcommand("workers", "List the workers and their jobs");
  cmd->fallthrough();
  AddJsonFlag(cmd, json.get());
  cmd->callback([ctl, json] {
    auto stub = Connect(ctl->flags);
    if (!stub.ok()) {
      ctl->exit_code = ReportError(stub.status(), ctl->flags);
      return;
    }
    grpc::ClientContext context;
    SetDeadline(&context, ctl->flags);
    v1::ListWorkersResponse response;
    absl::Status status =
        FromGrpcStatus((*stub)->ListWorkers(&context, v1::ListWorkersRequest(), &response));
    if (!status.ok()) {
      ctl->exit_code = ReportError(status, ctl->flags);
      return;
    }
    if (*json) {
      std::cout << ToJson(response) << "\n";
    } else {
      PrintWorkers(std::cout, response);
    }
  });
}

}  // namespace ftune::ctl
