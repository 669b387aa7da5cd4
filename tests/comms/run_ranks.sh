#!/usr/bin/env bash
# Multi-rank test runner for the grpc transport: starts N processes of one command on this
# machine with TESSERA_RANK, TESSERA_WORLD_SIZE and TESSERA_COORDINATOR=127.0.0.1:<free port>,
# waits for all of them (at most --timeout seconds, then kills the ones it started), prints
# each rank's exit status and exits non-zero if any rank failed.
#
#   tests/comms/run_ranks.sh -n 4 [--timeout 120] [--victim R] -- build/tests/comms/grpc_collectives_test
#
# --victim R: rank R is expected to die or hang (failure tests): its status is ignored and it
# is killed once every other rank has finished.
set -u
n=2
timeout=120
victim=-1
while [[ $# -gt 0 ]]; do
  case "$1" in
    -n) n="$2"; shift 2 ;;
    --timeout) timeout="$2"; shift 2 ;;
    --victim) victim="$2"; shift 2 ;;
    --) shift; break ;;
    *) echo "run_ranks.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
[[ $# -ge 1 ]] || { echo "usage: run_ranks.sh -n N [--timeout S] [--victim R] -- command [args]" >&2; exit 2; }

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export TESSERA_WORLD_SIZE="$n" TESSERA_COORDINATOR="127.0.0.1:$port"
pids=()
for ((r = 0; r < n; r++)); do
  TESSERA_RANK=$r "$@" &
  pids+=($!)
done

# Wait for every rank but the victim, within the timeout.
deadline=$((SECONDS + timeout))
status=0
for ((r = 0; r < n; r++)); do
  [[ $r -eq $victim ]] && continue
  pid=${pids[$r]}
  while kill -0 "$pid" 2>/dev/null && [[ $SECONDS -lt $deadline ]]; do sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    echo "run_ranks.sh: rank $r (pid $pid) still running after ${timeout}s: killing it" >&2
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    status=1
    continue
  fi
  wait "$pid"
  rc=$?
  echo "run_ranks.sh: rank $r exited with status $rc"
  [[ $rc -ne 0 ]] && status=1
done
if [[ $victim -ge 0 && $victim -lt $n ]]; then
  kill -KILL "${pids[$victim]}" 2>/dev/null
  wait "${pids[$victim]}" 2>/dev/null
  echo "run_ranks.sh: rank $victim (the victim) stopped"
fi
exit $status
