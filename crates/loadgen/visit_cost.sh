#!/usr/bin/env bash
# Instructions a new visitor costs, phase by phase, counted by callgrind (repeatable to a
# fraction of a percent, unlike throughput on a shared machine). See src/bin/visit_cost.rs.
#
#   crates/loadgen/visit_cost.sh                 # fresh numbers, pool of 5000, batches of 11
#   crates/loadgen/visit_cost.sh --returning     # numbers back after their hold
#
# Needs valgrind (apt-get install -y valgrind). Extra arguments go to the program.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -q -p calltrail-loadgen --bin visit_cost
bin=target/release/visit_cost
visits=2200
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
printf '%-12s %14s %12s\n' phase instructions per-visit
for phase in new-session writer server; do
  fn="visit_cost::phase_${phase//-/_}"
  valgrind --tool=callgrind --callgrind-out-file="$out/cg.%p" --collect-atstart=no \
    --toggle-collect="$fn" "$bin" --phase "$phase" --visits "$visits" "$@" \
    >"$out/log" 2>&1 || { cat "$out/log"; exit 1; }
  total=$(grep -h '^summary:' "$out"/cg.* | awk '{s += $2} END {print s + 0}')
  rm -f "$out"/cg.*
  # Nothing counted: the phase's function was inlined or renamed, not a free visit.
  if [ "$total" -eq 0 ]; then
    echo "callgrind counted nothing in $fn" >&2
    exit 1
  fi
  # The writer and server phases run one visit fewer: the first, which reads the site and its
  # pool, is not counted.
  n=$visits; [ "$phase" != new-session ] && n=$((visits - 1))
  printf '%-12s %14s %12s\n' "$phase" "$total" "$((total / n))"
done
