#!/usr/bin/env bash
# Issue 15, scenarios 1 and 3, in one command (docs/benchmarks.md):
#   services/fleet-sim/scripts/bench-rentals.sh [OUT_DIR]
# From BIN (default target/release; build with
# `cargo build --release -p sneakernet -p sneakernet-fleet-sim`):
# 1. rentals on the embedded SQLite, a sweep of USERS (default 1,4,16,64) against the bare
#    UPDATE+INSERT loop on the same disk;
# 2. rentals on Postgres (PG, default postgres://postgres:postgres@127.0.0.1:5432): the node on
#    a database of its own (bench_rentals, made afresh), against `pgbench -N` on bench_pg
#    (`pgbench -i -s 10`, made afresh), same client counts;
# 3. start-up: standalone cold and warm, each role alone, RUNS (default 5) of each;
# then the PNG plots of both sweeps into docs/plots/ and every JSON into OUT_DIR.
# DURATION (default 20s) is each sweep point's interval, ACCOUNTS the accounts per point. Prints the load average before and
# after each part: the machine may be shared, so read only ratios within one run.
set -euo pipefail
out=${1:-/tmp/sneakernet-bench}
bin=${BIN:-target/release}
users=${USERS:-1,4,16,64}
duration=${DURATION:-20s}
runs=${RUNS:-5}
accounts=${ACCOUNTS:-0}   # accounts signed up per point, 0 = fleet-sim's default (users x 40, at least 600)
pg=${PG:-postgres://postgres:postgres@127.0.0.1:5432}
plots=${PLOTS:-docs/plots}
mkdir -p "$out" "$plots"
load() { echo "load average ($1): $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) CPUs"; }

load "start"
"$bin/fleet-sim" rentals --sneakernet "$bin/sneakernet" --users "$users" --duration "$duration" \
  --kiosks 8 --bays 250 --accounts "$accounts" --json "$out/rentals-sqlite.json" --plot-dir "$plots" | tee "$out/rentals-sqlite.txt" || true
load "after SQLite rentals"

psql "$pg/postgres" -qAtc "drop database if exists bench_rentals" -c "create database bench_rentals"
psql "$pg/postgres" -qAtc "drop database if exists bench_pg" -c "create database bench_pg"
pgbench -i -q -s 10 "$pg/bench_pg" 2>&1 | tail -1
"$bin/fleet-sim" rentals --sneakernet "$bin/sneakernet" --users "$users" --duration "$duration" \
  --kiosks 8 --bays 250 --accounts "$accounts" --database-url "$pg/bench_rentals" --pgbench-url "$pg/bench_pg" \
  --json "$out/rentals-postgres.json" --plot-dir "$plots" | tee "$out/rentals-postgres.txt" || true
load "after Postgres rentals"

"$bin/fleet-sim" startup --sneakernet "$bin/sneakernet" --runs "$runs" --json "$out/startup.json" \
  | tee "$out/startup.txt"
load "end"
