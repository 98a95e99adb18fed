#!/usr/bin/env bash
# Cluster throughput against one node on this machine, side by side in one run:
# `tagcache bench` (text protocol, CONNECTIONS connections, get=80,put=20 over KEYS keys)
# against a one-node cluster, then against a three-node cluster with the connections
# spread over all three nodes (so two requests in three are forwarded one hop), and with
# `tagcache bench --ring-aware` (each request sent to its key's owner, same connection count),
# alternating round by round; medians of ROUNDS rounds and their ratio. The yardstick
# (../shared/BRIEF.md): the three-node figure is at least half the one-node figure.
#
# Environment: ROUNDS (3), DURATION (5s), CONNECTIONS (48), KEYS (100000), TAGCACHE_ARGS
# (extra `tagcache server` flags).
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5s}
CONNECTIONS=${CONNECTIONS:-48}
KEYS=${KEYS:-100000}

make -s build
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

# start_node I [JOIN]: node I listens on text 2198I, HTTP 2808I, gossip 2794I, peer 2795I.
start_node() {
  local i=$1 join=${2:-}
  bin/tagcache server --node-name "n$i" --tcp-port "2198$i" --http-port "2808$i" --resp-port 0 \
    --gossip-port "2794$i" --peer-port "2795$i" ${join:+--join "$join"} --log-level warn ${TAGCACHE_ARGS:-} \
    2>"$work/n$i.log" &
  pids+=($!)
}
ready() { # ready N: node 0 reports N members and nodes 0..N-1 are ready
  [ "$(bin/tagcache cluster members --port 28080 --json 2>/dev/null | grep -o '"state":"alive"' | wc -l)" = "$1" ] || return 1
  for i in $(seq 0 $(($1 - 1))); do curl -sf "localhost:2808$i/ready" >/dev/null || return 1; done
}
wait_members() {
  local n=$1 deadline=$((SECONDS + 30))
  until ready "$n"; do
    [ $SECONDS -lt $deadline ] || { echo "cluster of $n did not form; logs in $work" >&2; cat "$work"/*.log >&2; exit 1; }
    sleep 0.2
  done
}
stop_all() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  pids=()
}
# throughput TARGETS [FLAGS…]: requests per second of one bench run.
throughput() {
  local targets=$1 conns=$CONNECTIONS
  shift
  if [ "${1:-}" = --ring-aware ]; then conns=$((CONNECTIONS / 3)); fi # one connection per member each
  bin/tagcache bench --protocol text --targets "$targets" --connections "$conns" --duration "$DURATION" \
    --keys "$KEYS" --mix get=80,put=20 --json "$@" 2>/dev/null |
    sed -n 's/.*"requests_per_second": *\([0-9.e+]*\).*/\1/p'
}
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

one=() three=() aware=()
for r in $(seq 1 "$ROUNDS"); do
  start_node 0; wait_members 1
  throughput 127.0.0.1:21980 >/dev/null # warm up
  one+=("$(throughput 127.0.0.1:21980)")
  stop_all
  start_node 0; start_node 1 127.0.0.1:27940; start_node 2 127.0.0.1:27940; wait_members 3
  three+=("$(throughput 127.0.0.1:21980,127.0.0.1:21981,127.0.0.1:21982)")
  aware+=("$(throughput 127.0.0.1:28080 --ring-aware)")
  stop_all
  echo "round $r: one node ${one[-1]} req/s, three nodes ${three[-1]} req/s, ring-aware ${aware[-1]} req/s"
done
m1=$(printf '%s\n' "${one[@]}" | median)
m3=$(printf '%s\n' "${three[@]}" | median)
ma=$(printf '%s\n' "${aware[@]}" | median)
printf '\n%-34s %12s\n' "text protocol, get=80,put=20" "req/s (median)"
printf '%-34s %12.0f\n' "one node" "$m1" "three nodes, clients on all three" "$m3" "three nodes, ring-aware client" "$ma"
printf '%-34s %12.2f   (yardstick: >= 0.50)\n' "three / one" "$(awk -v a="$m3" -v b="$m1" 'BEGIN {print a / b}')"
printf '%-34s %12.2f   (yardstick: close to 1)\n' "ring-aware three / one" "$(awk -v a="$ma" -v b="$m1" 'BEGIN {print a / b}')"
