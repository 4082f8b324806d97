#!/usr/bin/env bash
# The "links held" scenario of docs/fleet-sim.md, with both baselines in the same run:
#   hold-bench.sh KIOSKS HOLD [OUT_DIR]        e.g. hold-bench.sh 5000 60s
# Starts, from BIN (default target/release): the auth role alone, the gateway role alone (so
# its memory and CPU are its own; embedded SQLite, or Postgres with DB=postgres), the bare
# echo and the heartbeating echo; then holds KIOSKS links to each in turn with fleet-sim,
# sampling the server from /proc, and prints the three side by side (ratios to the bare
# echo). Every process it started is stopped on exit. Needs a hard `ulimit -n` >= KIOSKS + 100.
# PERF_SECS=30 also records the gateway with `perf` for that long during its hold.
set -euo pipefail
kiosks=${1:?usage: hold-bench.sh KIOSKS HOLD [OUT_DIR]}
hold=${2:?usage: hold-bench.sh KIOSKS HOLD [OUT_DIR]}
out=${3:-/tmp/fleet-sim-bench}
bin=${BIN:-target/release}
ulimit -n 20000
mkdir -p "$out"
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

# Waits until log file $1 has a line starting with $2 (60 s at most).
wait_for() {
  for _ in $(seq 1 300); do grep -q "^$2" "$1" 2>/dev/null && return 0; sleep 0.2; done
  echo "hold-bench: no '$2' in $1 after 60s" >&2; cat "$1" >&2; exit 1
}

node="$out/node-$kiosks"
rm -rf "$node"; mkdir -p "$node"
head -c 24 /dev/urandom | base64 > "$out/operator.password"; chmod 600 "$out/operator.password"
common=(SNEAKERNET_LOG__FILTER=warn SNEAKERNET_DATA_DIR="$node")
if [ "${DB:-sqlite}" = postgres ]; then
  common+=(SNEAKERNET_DATABASE_URL="${PG_URL:-postgres://postgres:postgres@127.0.0.1:5432/test}"
           SNEAKERNET_DATABASE_SCHEMA_PREFIX="fleetsim${kiosks}_")
fi
env "${common[@]}" SNEAKERNET_LISTEN=127.0.0.1:50061 \
  SNEAKERNET_AUTH__BOOTSTRAP_OPERATOR_EMAIL=fleet-sim@example.com \
  SNEAKERNET_AUTH__BOOTSTRAP_OPERATOR_PASSWORD_FILE="$out/operator.password" \
  "$bin/sneakernet" serve --role auth > "$out/auth.log" 2>&1 &
pids+=($!)
wait_for "$out/auth.log" "sneakernet: serving"
env "${common[@]}" SNEAKERNET_LISTEN=127.0.0.1:50062 SNEAKERNET_AUTH__URL=http://127.0.0.1:50061 \
  SNEAKERNET_METRICS_LISTEN=127.0.0.1:50069 \
  "$bin/sneakernet" serve --role gateway > "$out/gateway.log" 2>&1 &
gateway=$!; pids+=($gateway)
"$bin/fleet-sim" echo-server --listen 127.0.0.1:50071 > "$out/echo.log" 2>&1 &
echo_bare=$!; pids+=($echo_bare)
"$bin/fleet-sim" echo-server --listen 127.0.0.1:50072 --heartbeat-interval 15s > "$out/echo-hb.log" 2>&1 &
echo_hb=$!; pids+=($echo_hb)
wait_for "$out/gateway.log" "sneakernet: serving"
wait_for "$out/echo.log" "fleet-sim: echo serving"
wait_for "$out/echo-hb.log" "fleet-sim: echo serving"

# HOLD_ARGS: more `fleet-sim hold` flags for all three runs, e.g. "--connect-timeout 600s".
read -r -a extra <<< "${HOLD_ARGS:-}"
sim=("$bin/fleet-sim" hold --kiosks "$kiosks" --hold "$hold" "${extra[@]}")
"${sim[@]}" --echo http://127.0.0.1:50071 --pid "$echo_bare" --label echo --json "$out/echo-$kiosks.json" || true
"${sim[@]}" --echo http://127.0.0.1:50072 --pid "$echo_hb" --label echo+heartbeats --json "$out/echo-hb-$kiosks.json" || true
rows() { [ "${DB:-sqlite}" = postgres ] && psql "${PG_URL:-postgres://postgres:postgres@127.0.0.1:5432/test}" -qAtc \
  "select coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0) from pg_stat_user_tables where schemaname = 'fleetsim${kiosks}_gateway'" || echo -; }
before=$(rows)
gateway_hold=("${sim[@]}" --gateway http://127.0.0.1:50062 --auth http://127.0.0.1:50061
  --operator-email fleet-sim@example.com --operator-password-file "$out/operator.password"
  --prefix "B$kiosks" --credentials "$out/credentials-$kiosks.json"
  --pid "$gateway" --metrics-url http://127.0.0.1:50069/metrics
  --label gateway --json "$out/gateway-$kiosks.json")
if [ -n "${PERF_SECS:-}" ]; then
  # Profile the gateway for PERF_SECS once the hold has begun (the first progress line).
  "${gateway_hold[@]}" 2> >(tee "$out/gateway-hold.err" >&2) &
  hold_pid=$!
  for _ in $(seq 1 1500); do grep -q "^fleet-sim: all .* links up" "$out/gateway-hold.err" 2>/dev/null && break; sleep 0.2; done
  sleep 8
  perf record -F 499 -g -o "$out/perf-$kiosks.data" -p "$gateway" -- sleep "$PERF_SECS" 2>/dev/null || true
  wait "$hold_pid" || true
  perf report -i "$out/perf-$kiosks.data" -g none --no-children --sort dso,symbol --percent-limit 0.3 --stdio 2>/dev/null \
    | grep -v '^$' | head -80 > "$out/perf-$kiosks.txt" || true
  echo "perf report: $out/perf-$kiosks.txt"
else
  "${gateway_hold[@]}" || true
fi
echo "gateway rows written (Postgres statistics, whole run incl. connect): before $before, after $(rows)"
"$bin/fleet-sim" compare "$out/echo-$kiosks.json" "$out/echo-hb-$kiosks.json" "$out/gateway-$kiosks.json"
