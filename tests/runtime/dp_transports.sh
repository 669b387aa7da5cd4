#!/usr/bin/env bash
# Data-parallel training through the command line on every transport: 20 steps of the mlp on
# Fashion-MNIST on a 2x2 and a 1x4 mesh (16 examples per node) must match one node trained on
# the same global batch of 64 within the stated tolerance (2e-4 relative on the mean training
# loss; the accuracy within 0.2 points), and the three transports must agree exactly.
#   tests/runtime/dp_transports.sh build/runtime/tessera
set -euo pipefail
tessera=$(readlink -f "$1")
here=$(dirname "$(readlink -f "$0")")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
common=(train --model mlp --precision fp32 --max-steps 20 --lr 0.05 --seed 3 --no-progress --threads 1)

# "loss accuracy" of the epoch record in a metrics file.
result() { grep test_accuracy "$1" | tail -1 | sed -E 's/.*"train_loss": ([^,]+), "test_accuracy": ([^,]+),.*/\1 \2/'; }

"$tessera" "${common[@]}" --batch-size 64 --metrics "$tmp/single.jsonl" > "$tmp/single.log"
read -r ref_loss ref_acc < <(result "$tmp/single.jsonl")
echo "single node, batch 64: loss $ref_loss accuracy $ref_acc"

fail=0
for mesh in 2x2 1x4; do
  "$tessera" "${common[@]}" --batch-size 16 --mesh "$mesh" --metrics "$tmp/loop-$mesh.jsonl" > "$tmp/loop-$mesh.log"
  mpirun -np 4 --oversubscribe "$tessera" "${common[@]}" --batch-size 16 --mesh "$mesh" --transport mpi \
    --metrics "$tmp/mpi-$mesh.jsonl" > "$tmp/mpi-$mesh.log"
  "$tessera" launch -n 4 -- "${common[@]}" --batch-size 16 --mesh "$mesh" --transport grpc \
    --metrics "$tmp/grpc-$mesh.jsonl" > "$tmp/grpc-$mesh.log"
  for t in loop mpi grpc; do
    read -r loss acc < <(result "$tmp/$t-$mesh.jsonl")
    ok=$(python3 -c "print(int(abs($loss - $ref_loss) <= 2e-4 * abs($ref_loss) and abs($acc - $ref_acc) <= 0.002))")
    echo "$mesh over $t: loss $loss accuracy $acc $([[ $ok == 1 ]] && echo matches || echo MISMATCH)"
    [[ $ok == 1 ]] || fail=1
  done
  for t in mpi grpc; do
    if [[ "$(result "$tmp/$t-$mesh.jsonl")" != "$(result "$tmp/loop-$mesh.jsonl")" ]]; then
      echo "$mesh: $t differs from loopback"; fail=1
    fi
  done
  grep -q "step time: measured" "$tmp/mpi-$mesh.log" || { echo "no link table / step time from the mpi run"; fail=1; }
done
# Many small buckets with MPI's native all-reduce: every rank must start them in the same order
# (MPI's rule), which the gradient sync's single worker guarantees. Native sums in another
# order, so it is held to the tolerance, not to loopback's exact result.
mpirun -np 4 --oversubscribe "$tessera" "${common[@]}" --batch-size 16 --mesh 2x2 --transport mpi \
  --allreduce native --bucket-mb 0.01 --metrics "$tmp/native.jsonl" > "$tmp/native.log"
read -r loss acc < <(result "$tmp/native.jsonl")
ok=$(python3 -c "print(int(abs($loss - $ref_loss) <= 2e-4 * abs($ref_loss) and abs($acc - $ref_acc) <= 0.002))")
echo "2x2 over mpi, native all-reduce in 10 KiB buckets: loss $loss accuracy $acc $([[ $ok == 1 ]] && echo matches || echo MISMATCH)"
[[ $ok == 1 ]] || fail=1

[[ $fail == 0 ]] && echo "data-parallel transports: all match"
exit $fail
