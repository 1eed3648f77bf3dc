// Early-return helpers for absl::Status / absl::StatusOr (Debian's Abseil 20220623 has no
// public RETURN_IF_ERROR / ASSIGN_OR_RETURN).
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define FT_STATUS_CONCAT_INNER(a, b) a##b
#define FT_STATUS_CONCAT(a, b) FT_STATUS_CONCAT_INNER(a, b)

// Returns the status from the enclosing function when `expr` is not OK.
#define RETURN_IF_ERROR(expr)                          \
  do {                                                 \
    ::absl::Status ft_status_ = ::ftune::ToStatus(expr); \
    if (!ft_status_.ok()) return ft_status_;           \
  } while (false)

// `ASSIGN_OR_RETURN(auto x, MakeX());` binds the value or returns the error.
#define ASSIGN_OR_RETURN(lhs, rexpr) \
  FT_ASSIGN_OR_RETURN_IMPL(FT_STATUS_CONCAT(ft_statusor_, __LINE__), lhs, rexpr)

#define FT_ASSIGN_OR_RETURN_IMPL(statusor, lhs, rexpr) \
  auto statusor = (rexpr);                             \
  if (!statusor.ok()) return statusor.status();        \
  lhs = std::move(statusor).value()

namespace ftune {

inline const absl::Status& ToStatus(const absl::Status& status) { return status; }
template <typename T>
const absl::Status& ToStatus(const absl::StatusOr<T>& status_or) {
  return status_or.status();
}

}  // namespace ftune
