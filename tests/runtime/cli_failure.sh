#!/usr/bin/env bash
# A rank that stops answering in the middle of data-parallel training (SIGSTOP: alive but
# silent, the hardest case): the other rank must print an error naming the operation and the
# peer within the deadline, and the launcher must end the job with a non-zero status soon
# after, over gRPC (tessera launch) and over MPI (mpirun).
#   tests/runtime/cli_failure.sh build/runtime/tessera
set -uo pipefail
tessera=$(readlink -f "$1")
tmp=$(mktemp -d)
trap 'pkill -KILL -P $$ 2>/dev/null; rm -rf "$tmp"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 TESSERA_COMM_TIMEOUT_MS=3000
common=(train --model mlp --precision fp32 --epochs 100 --batch-size 16 --no-progress --threads 1 --mesh 1x2 --allreduce ring)
fail=0

# check TRANSPORT LIMIT_S LAUNCHER...: start, wait for training, stop the last rank, time the end.
check() {
  local name=$1 limit=$2
  shift 2
  "$@" "${common[@]}" --transport "$name" > "$tmp/$name.out" 2> "$tmp/$name.err" &
  local job=$!
  for _ in $(seq 1 300); do grep -q "data-parallel" "$tmp/$name.out" && break; sleep 0.1; done
  sleep 1
  local victim
  victim=$(pgrep -P "$job" | tail -1)
  if [[ -z "$victim" ]] || ! grep -q "data-parallel" "$tmp/$name.out"; then
    echo "$name: training did not start"; cat "$tmp/$name.err"; fail=1; return
  fi
  local t0=$SECONDS
  kill -STOP "$victim"
  local waited=0
  while kill -0 "$job" 2>/dev/null && (( waited < 60 )); do sleep 0.2; waited=$((SECONDS - t0)); done
  if kill -0 "$job" 2>/dev/null; then
    echo "$name: FAIL: the job still runs 60 s after a rank stopped"; kill -KILL "$victim" "$job"; fail=1; return
  fi
  wait "$job"
  local rc=$? took=$((SECONDS - t0))
  local err
  err=$(grep -m1 "tessera: error:" "$tmp/$name.err")
  echo "$name: exit status $rc after ${took} s; $err"
  [[ $rc != 0 ]] || { echo "$name: FAIL: exit status 0"; fail=1; }
  (( took <= limit )) || { echo "$name: FAIL: took more than $limit s"; fail=1; }
  [[ "$err" == *"timed out after 3000 ms"* && "$err" == *allreduce* && "$err" == *"rank 1"* ]] ||
    { echo "$name: FAIL: the error does not name the operation, the deadline and the peer"; fail=1; }
}

# The stopped rank is killed by the launcher after the others' deadline plus 5 s.
check grpc 20 "$tessera" launch -n 2 -- 
check mpi 10 mpirun -np 2 -x TESSERA_COMM_TIMEOUT_MS "$tessera"
[[ $fail == 0 ]] && echo "cli failure: every rank reported and the jobs ended"
exit $fail
