#!/usr/bin/env bash
# verify_units.sh BUILD_DIR
# Installs BUILD_DIR into a fresh prefix and checks the rendered systemd units there:
# `systemd-analyze verify` (syntax, unknown keys, ExecStart executable) of every unit and of
# worker instances cpu and cuda:0, and `systemd-analyze security --offline` exposure limits.
# A deliberately broken copy of a unit must fail, so the check is known to bite.
# Needs systemd-analyze (Debian package `systemd`).
set -euo pipefail
build=${1:?usage: verify_units.sh BUILD_DIR}
if ! command -v systemd-analyze >/dev/null; then
  echo "verify_units: systemd-analyze not found (apt-get install systemd)" >&2
  exit 1
fi
work=$(mktemp -d -t ftune-units-XXXXXX)
trap 'rm -rf "$work"' EXIT
prefix=$work/prefix
cmake --install "$build" --prefix "$prefix" >"$work/install.log" || {
  cat "$work/install.log" >&2; exit 1; }
units=$prefix/lib/systemd/system
cd "$units"

failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }

# verify ARG: ARG is a unit file, or TEMPLATE:INSTANCE-NAME (systemd-analyze's alias syntax,
# the only way to give it an instance whose name holds a ':' such as cuda:0).
verify() {
  local out
  if ! out=$(systemd-analyze verify "$@" 2>&1); then
    fail "systemd-analyze verify $*: ${out:-exit status non-zero}"
  elif grep -E 'ft(controller|worker|serve)' <<<"$out" >&2; then
    fail "systemd-analyze verify $* warned about our unit"
  else
    echo "ok: verify $*"
  fi
}

for unit in ftcontroller.service ftserve.service; do
  [[ -f $unit ]] || fail "$unit not installed"
  verify "./$unit"
done
[[ -f ftworker@.service ]] || fail "ftworker@.service not installed"
verify ./ftworker@.service:ftworker@cpu.service
verify ./ftworker@.service:ftworker@cuda:0.service

# The units must point into the prefix they were installed to.
for unit in ftcontroller.service ftserve.service ftworker@.service; do
  grep -q "^ExecStart=$prefix/bin/" "$unit" || fail "$unit: ExecStart is not under $prefix/bin"
  grep -q "^EnvironmentFile=-$prefix/etc/ftune/" "$unit" ||
    fail "$unit: EnvironmentFile is not under $prefix/etc/ftune"
done
grep -q '^TimeoutStopSec=10min$' ftworker@.service ||
  fail "ftworker@.service: a worker needs TimeoutStopSec=10min to checkpoint on stop"
grep -q '^ExecReload=/bin/kill -HUP \$MAINPID$' ftserve.service ||
  fail "ftserve.service: reload must send SIGHUP"

# Exposure score (0 = locked down, 10 = none); --threshold is that times ten.
security() {
  local threshold=$1 unit=$2 out
  out=$(systemd-analyze security --offline=yes --threshold="$threshold" "$unit" 2>&1) ||
    fail "$unit: exposure above $threshold/10: $(tail -n1 <<<"$out")"
  echo "ok: $(tail -n1 <<<"$out")"
}
security 15 ./ftcontroller.service
security 20 ./ftserve.service
security 20 ./ftworker@.service:ftworker@cuda:0.service

# Negative controls: a missing executable and an unknown key must both be caught.
mkdir "$work/broken"
sed "s|^ExecStart=$prefix/bin/ftcontroller|ExecStart=$work/no-such-binary|" \
  ftcontroller.service >"$work/broken/ftcontroller.service"
if systemd-analyze verify "$work/broken/ftcontroller.service" >/dev/null 2>&1; then
  fail "verify accepted a unit whose ExecStart does not exist"
fi
sed 's/^NoNewPrivileges=yes$/NoNewPrivilegez=yes/' ftcontroller.service \
  >"$work/broken/ftcontroller.service"
if ! systemd-analyze verify "$work/broken/ftcontroller.service" 2>&1 | grep -q NoNewPrivilegez; then
  fail "verify did not report an unknown key"
fi

if ((failures)); then
  echo "verify_units: $failures failure(s)" >&2
  exit 1
fi
echo "verify_units: all units verified"
