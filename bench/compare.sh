#!/usr/bin/env bash
# Side-by-side comparison of a TagCache node and redis-server on this machine, in one run:
#   1. redis-benchmark against both (SET and GET, 50 clients, without and with -P 16),
#      alternating targets round by round, median of ROUNDS rounds each;
#   2. tagcache bench over the text protocol versus RESP on the same node;
#   3. peak RSS after loading KEYS keys (100-byte values, two tags each from a pool of
#      10k): TagCache with SET … TAGS, Redis with SET plus one SADD per tag.
# Prints ratios: these machines are shared and noisy, so only same-run ratios mean much.
#
# Every measurement first waits (up to 60 s) for the machine to be QUIET_IDLE % idle.
#
# Environment: ROUNDS (3), REQUESTS (redis-benchmark -n, 200000), PIPELINED_REQUESTS
# (1000000), KEYS (1000000), DURATION (tagcache bench duration, 5s), QUIET_IDLE (90),
# SKIP_MEMORY=1, TAGCACHE_ARGS (extra `tagcache server` flags, e.g. --gomaxprocs 1).
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
REQUESTS=${REQUESTS:-200000}
PIPELINED_REQUESTS=${PIPELINED_REQUESTS:-1000000}
KEYS=${KEYS:-1000000}
DURATION=${DURATION:-5s}
REDIS_PORT=16379
TC_RESP=16380
TC_TEXT=11984

if ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null; then
  echo "redis-server/redis-benchmark missing: installing Debian's redis-server and redis-tools"
  if [ "$(id -u)" != 0 ]; then echo "need root to apt-get install; install redis-server redis-tools and rerun" >&2; exit 1; fi
  apt-get update -qq && apt-get install -y -qq redis-server redis-tools >/dev/null
fi
echo "redis: $(redis-server --version | cut -d' ' -f1-3)"

make -s build
go build -o bin/respgen ./bench/respgen
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

start_redis() {
  redis-server --port $REDIS_PORT --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
    --logfile "$work/redis.log" &
  redis_pid=$!; pids+=($redis_pid)
  until redis-cli -p $REDIS_PORT ping >/dev/null 2>&1; do sleep 0.1; done
}
start_tagcache() {
  bin/tagcache server --tcp-port $TC_TEXT --http-port 0 --resp-port $TC_RESP --log-level warn ${TAGCACHE_ARGS:-} \
    2>"$work/tagcache.log" &
  tc_pid=$!; pids+=($tc_pid)
  until redis-cli -p $TC_RESP ping >/dev/null 2>&1; do sleep 0.1; done
}
stop() { kill "$1"; wait "$1" 2>/dev/null || true; }

# rps PORT TEST PIPELINE N: requests per second redis-benchmark measured.
rps() {
  redis-benchmark -p "$1" -t "$2" -n "$4" -c 50 -P "$3" -r 100000 -d 100 --csv 2>/dev/null |
    awk -F'","' -v t="$(echo "$2" | tr a-z A-Z)" '$1 ~ t {gsub(/"/,"",$2); print $2}'
}
# wait_quiet: until the machine is at least QUIET_IDLE % idle over half a second (other
# people's loads on a shared machine skew one target and not the other), at most 60 s.
QUIET_IDLE=${QUIET_IDLE:-90}
idle_pct() {
  local a b c d e f g h t1 i1
  read -r _ a b c d e f g h _ </proc/stat; t1=$((a+b+c+d+e+f+g+h)); i1=$((d+e))
  sleep 0.5
  read -r _ a b c d e f g h _ </proc/stat
  echo $(( 100 * (d + e - i1) / (a+b+c+d+e+f+g+h - t1 + 1) ))
}
wait_quiet() {
  [ -r /proc/stat ] || return 0
  for _ in $(seq 60); do [ "$(idle_pct)" -ge "$QUIET_IDLE" ] && return 0; sleep 0.5; done
  echo "warning: machine busy; measuring anyway" >&2
}
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

echo
echo "== redis-benchmark, 50 clients, 100-byte values, random keys from 100k; median of $ROUNDS rounds"
start_redis
start_tagcache
printf '%-14s %14s %14s %8s\n' test redis tagcache ratio
for pipe in 1 16; do
  n=$REQUESTS; [ $pipe -gt 1 ] && n=$PIPELINED_REQUESTS
  for t in set get; do
    : >"$work/r"; : >"$work/t"
    for _ in $(seq "$ROUNDS"); do
      wait_quiet
      rps $REDIS_PORT $t $pipe "$n" >>"$work/r"
      rps $TC_RESP $t $pipe "$n" >>"$work/t"
    done
    r=$(median <"$work/r"); c=$(median <"$work/t")
    printf '%-14s %14.0f %14.0f %8.2f\n' "$t -P $pipe" "$r" "$c" "$(echo "$c $r" | awk '{print $1/$2}')"
  done
done
stop $redis_pid

echo
echo "== tagcache bench on one node: text protocol vs RESP, 50 connections, get=80,put=20, $DURATION each; median of $ROUNDS rounds"
printf '%-14s %14s %14s %8s\n' pipeline text resp text/resp
tcbench() {
  bin/tagcache bench --protocol "$1" --targets "127.0.0.1:$2" --pipeline "$3" --duration "$DURATION" --json |
    sed -E 's/.*"requests_per_second":([0-9.]+).*/\1/'
}
for pipe in 1 16; do
  : >"$work/x"; : >"$work/y"
  for _ in $(seq "$ROUNDS"); do
    wait_quiet
    tcbench text $TC_TEXT $pipe >>"$work/x"
    tcbench resp $TC_RESP $pipe >>"$work/y"
  done
  text=$(median <"$work/x"); resp=$(median <"$work/y")
  printf '%-14s %14.0f %14.0f %8.2f\n' "-P $pipe" "$text" "$resp" "$(echo "$text $resp" | awk '{print $1/$2}')"
done
stop $tc_pid

if [ "${SKIP_MEMORY:-}" = 1 ]; then exit 0; fi
echo
echo "== memory: $KEYS keys, 100-byte values, two tags each from a pool of 10000"
rss() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }   # peak RSS, KiB
bin/respgen --target redis --keys "$KEYS" >"$work/redis.resp"
bin/respgen --target tagcache --keys "$KEYS" >"$work/tagcache.resp"
start_redis
redis-cli -p $REDIS_PORT --pipe <"$work/redis.resp" | tail -1
r_rss=$(rss $redis_pid); r_keys=$(redis-cli -p $REDIS_PORT dbsize)
stop $redis_pid
start_tagcache
redis-cli -p $TC_RESP --pipe <"$work/tagcache.resp" | tail -1
t_rss=$(rss $tc_pid); t_keys=$(redis-cli -p $TC_RESP dbsize)
stop $tc_pid
printf '%-14s %14s %14s %8s\n' "" redis tagcache ratio
printf '%-14s %14s %14s\n' "keys" "$r_keys" "$t_keys"
printf '%-14s %14.1f %14.1f %8.2f\n' "peak RSS MiB" "$(echo "$r_rss" | awk '{print $1/1024}')" "$(echo "$t_rss" | awk '{print $1/1024}')" "$(echo "$t_rss $r_rss" | awk '{print $1/$2}')"
