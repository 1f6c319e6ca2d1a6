#!/usr/bin/env bash
# The distillation rows of the issue-17 frontier (standard tier) as one process per (pair, seed, budget), run in
# parallel on a many-core machine (used on a lent 16-core box: 18 processes, 1 torch thread each).
#   REGRAFT_ZOO_DIR=/path/to/zoo bash bench/frontier_parallel.sh OUT_DIR LIMIT_S "S->T3=bico" "SM->T3=bico" ...
# PAIR=VARIANT names the best closed form of each pair, found by that pair's closed-form run:
#   python bench/transfer_frontier.py --tier standard --pairs PAIR --budgets --calib-seeds 0 1 --baselines 100 \
#       --tag _PAIR_closed
# Each process here recomputes only that variant on calibration seed 0 (its init) and the seed-free rows; then
#   python bench/transfer_frontier.py --merge CLOSED.json... RUNS.json... --tag _standard
# joins them (a row recomputed by several processes is kept once; the best closed form must agree).
set -u
out=${1:?OUT_DIR}; limit=${2:?LIMIT_S}; shift 2
runs=$(mktemp -d); mkdir -p "$out"
machine=${FRONTIER_MACHINE:-"$(nproc)-core machine, one process per pair/seed/budget"}
for pv in "$@"; do
  pair=${pv%%=*}; best=${pv#*=}
  for seed in 0 1 2; do
    for n in 256 1024; do
      tag="_${pair/->/-}_s${seed}_${n}"
      timeout "$limit" python3 bench/transfer_frontier.py --tier standard --pairs "$pair" --seed-list "$seed" \
        --budgets "$n" --only-init --variants "$best" --calib-seeds 0 --baselines --out-dir "$runs" --tag "$tag" \
        --machine "$machine" >"$runs/log$tag.txt" 2>&1 &
    done
  done
done
wait
grep -h "distill<-" "$runs"/log_*.txt | cut -c1-160
tar -czf "$out/frontier_runs.tar.gz" -C "$runs" .
