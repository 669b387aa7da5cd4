#!/usr/bin/env bash
# tessera launch's CPU binding: with N ranks on at least N CPUs, --bind core (the default) gives
# each rank its own non-empty block of the launcher's CPUs (disjoint, together all of them);
# --bind none leaves every rank on all of them; a bad --bind value is refused.
#   tests/launch_bind.sh build/runtime/tessera
set -u
tessera=$1
fail() { echo "FAIL: $*"; exit 1; }
all=$("$tessera" info | sed -n 's/^CPU set  this process may run on CPU //p')
[[ -n "$all" && "$all" != "?" ]] || fail "tessera info cannot tell its CPU set ('$all')"
# Expand "0-2,5" into one CPU per line.
expand() { tr ',' '\n' <<<"$1" | while IFS=- read -r a b; do seq "$a" "${b:-$a}"; done; }
ncpu=$(expand "$all" | wc -l)
n=$(( ncpu < 2 ? 1 : 2 ))
sets=$("$tessera" launch -n "$n" -- info | sed -n 's/^CPU set  this process may run on CPU //p')
[[ $(wc -l <<<"$sets") -eq $n ]] || fail "expected $n CPU sets, got: $sets"
cpus=$(while read -r s; do expand "$s"; done <<<"$sets" | sort -n)
[[ "$cpus" == "$(expand "$all" | sort -n)" ]] || fail "bound sets {$(tr '\n' ' ' <<<"$sets")} do not partition {$all}"
[[ $(uniq -d <<<"$cpus" | wc -l) -eq 0 ]] || fail "bound sets overlap: $sets"
unbound=$("$tessera" launch -n "$n" --bind none -- info | sed -n 's/^CPU set  this process may run on CPU //p' | sort -u)
[[ "$unbound" == "$all" ]] || fail "--bind none: expected every rank on $all, got: $unbound"
if "$tessera" launch -n 2 --bind sideways -- info >/dev/null 2>&1; then fail "--bind sideways was accepted"; fi
echo "launch binding: $n rank(s) on {$all} -> {$(tr '\n' ' ' <<<"$sets" | sed 's/ $//')}: ok"
