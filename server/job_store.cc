#include "server/job_store.h"

namespace ftune::server {

bool IsEndedState(ftune::v1::JobState state) {
  return state == ftune::v1::JOB_STATE_SUCCEEDED || state == ftune::v1::JOB_STATE_FAILED ||
         state == ftune::v1::JOB_STATE_CANCELLED;
}

}  // namespace ftune::server
