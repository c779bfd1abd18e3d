#!/usr/bin/env bash
# A local cluster on loopback ports: redis-server, M job workers, N API replicas, nginx in front.
#
#   scripts/cluster.sh up [--replicas N] [--workers M]   start, wait until ready, print base URL
#   scripts/cluster.sh down                              stop exactly what `up` started (by PID)
#   scripts/cluster.sh restart-api                       restart each API replica on its port
#   scripts/cluster.sh status                            what runs, with PIDs
#
# State (PIDs, logs, generated nginx.conf, Prometheus multiprocess files) lives in
# $CXR_CLUSTER_DIR (default .cluster/ in the checkout). Settings are the usual CXR_* variables;
# this script sets the job backend to Redis. Workers run under `nice -n 10` (CXR_WORKER_NICE)
# with 1 ONNX Runtime thread each (CXR_WORKER_THREADS), so saturated workers leave the API
# replicas the CPU for interactive requests. Needs redis-server and nginx (Debian packages).
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"
dir="${CXR_CLUSTER_DIR:-$repo/.cluster}"
python="${CXR_PYTHON:-$repo/.venv/bin/python}"
wait_s="${CXR_CLUSTER_WAIT_S:-240}"

die() { echo "cluster: $*" >&2; exit 1; }

free_ports() {  # N free loopback ports (bound and released at once; the OS does not reuse soon)
  "$python" - "$1" <<'PY'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
PY
}

wait_http() {  # URL: wait until it answers 200 (or the process named $2 died)
  "$python" - "$1" "$wait_s" "${2:-}" <<'PY'
import os, sys, time, urllib.request
url, limit, pidfile = sys.argv[1], float(sys.argv[2]), sys.argv[3]
deadline = time.monotonic() + limit
while time.monotonic() < deadline:
    if pidfile:
        pid = int(open(pidfile).read().split()[0])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            sys.exit(f"cluster: process {pidfile} exited; see its log")
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            if r.status == 200:
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.5)
sys.exit(f"cluster: {url} not ready after {limit:.0f} s")
PY
}

started_at() {  # PID: its start time in clock ticks since boot (survives exec, not PID reuse)
  [ -r "/proc/$1/stat" ] && sed -e 's/^.*) //' "/proc/$1/stat" | cut -d' ' -f20
}

# start NAME CMD...: run detached in its own session, log to logs/NAME.log; pids/NAME records
# "PID NAME START_TIME" so that `down` never signals a process that merely reused the PID.
start() {
  local name="$1"; shift
  setsid "$@" >"$dir/logs/$name.log" 2>&1 < /dev/null &
  echo "$! $name $(started_at $!)" >"$dir/pids/$name"
}

# stop NAME: TERM the recorded PID if it is still the process we started, KILL after 15 s.
stop() {
  local file="$dir/pids/$1" pid name since
  [ -f "$file" ] || return 0
  read -r pid name since <"$file"
  if kill -0 "$pid" 2>/dev/null && [ "$(started_at "$pid")" = "$since" ]; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$file"
}

api_env() {  # the environment every API replica and worker gets
  export CXR_CLUSTER_DIR="$dir"
  export CXR_JOBS__BACKEND=redis
  export CXR_JOBS__REDIS_URL="redis://127.0.0.1:$(cat "$dir/redis.port")/0"
  export PROMETHEUS_MULTIPROC_DIR="$dir/metrics"
  # nginx runs on loopback: believe X-Forwarded-For from it (nginx overwrites the header).
  export CXR_TRUSTED_PROXIES='["127.0.0.1"]'
}

start_api() {  # INDEX PORT
  ( api_env; start "api-$1" "$python" -m service --host 127.0.0.1 --port "$2" )
}

write_nginx_conf() {  # NGINX_PORT API_PORT...
  local port="$1"; shift
  local servers="" p
  for p in "$@"; do servers+="    server 127.0.0.1:$p max_fails=2 fail_timeout=5s;"$'\n'; done
  local body_limit="${CXR_LIMITS__MAX_UPLOAD_BYTES:-209715200}"
  sed -e "s|@DIR@|$dir|g" -e "s|@PORT@|$port|g" -e "s|@BODY@|$body_limit|g" \
      scripts/nginx.conf.template | awk -v s="$servers" '{ if ($0 ~ /^@SERVERS@$/) printf "%s", s; else print }' \
      >"$dir/nginx.conf"
}

up() {
  local replicas=2 workers=2
  while [ $# -gt 0 ]; do
    case "$1" in
      --replicas) replicas="$2"; shift 2 ;;
      --workers) workers="$2"; shift 2 ;;
      *) die "unknown option $1" ;;
    esac
  done
  command -v redis-server >/dev/null || die "redis-server not found (Debian package redis-server)"
  local nginx_bin; nginx_bin="$(command -v nginx || echo /usr/sbin/nginx)"
  [ -x "$nginx_bin" ] || die "nginx not found (Debian package nginx)"
  [ -x "$python" ] || scripts/setup.sh llm
  [ -z "$(ls -A "$dir/pids" 2>/dev/null)" ] || die "a cluster already runs from $dir (down first)"
  rm -rf "$dir/metrics" "$dir/nginx"
  mkdir -p "$dir/pids" "$dir/logs" "$dir/metrics" "$dir/redis" "$dir/nginx"
  # nginx workers drop root privileges when started as root: let them write their temp files.
  chmod 0777 "$dir/nginx"
  read -r -a ports <<<"$(free_ports $((replicas + 2)))"
  echo "${ports[0]}" >"$dir/redis.port"
  export CXR_CLUSTER_DIR="$dir"
  start redis redis-server --bind 127.0.0.1 --port "${ports[0]}" --dir "$dir/redis" \
    --appendonly yes --save "" --daemonize no
  "$python" - "${ports[0]}" "$wait_s" <<'PY' || { down; die "redis did not start; see $dir/logs/redis.log"; }
import socket, sys, time
deadline = time.monotonic() + float(sys.argv[2])
while time.monotonic() < deadline:
    try:
        with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1) as s:
            s.sendall(b"PING\r\n")
            if s.recv(16).startswith(b"+PONG"):
                sys.exit(0)
    except OSError:
        time.sleep(0.2)
sys.exit(1)
PY
  local i api_ports=()
  for i in $(seq 1 "$workers"); do
    ( api_env
      export CXR_CONCURRENCY__INTRA_OP_THREADS="${CXR_WORKER_THREADS:-1}"
      export CXR_LOG_LEVEL=info  # `up` waits for the worker's "worker ready" info line
      start "worker-$i" nice -n "${CXR_WORKER_NICE:-10}" "$python" -m service.worker )
  done
  for i in $(seq 1 "$replicas"); do
    api_ports+=("${ports[$((i + 1))]}")
    start_api "$i" "${ports[$((i + 1))]}"
    echo "${ports[$((i + 1))]}" >"$dir/api-$i.port"
  done
  for i in $(seq 1 "$replicas"); do
    wait_http "http://127.0.0.1:$(cat "$dir/api-$i.port")/health/ready" "$dir/pids/api-$i" \
      || { down; exit 1; }
  done
  for i in $(seq 1 "$workers"); do
    grep -q "worker ready" "$dir/logs/worker-$i.log" 2>/dev/null || wait_log "worker-$i" || { down; exit 1; }
  done
  write_nginx_conf "${ports[1]}" "${api_ports[@]}"
  "$nginx_bin" -t -q -p "$dir/nginx" -e "$dir/logs/nginx-error.log" -c "$dir/nginx.conf" \
    || { down; die "nginx.conf invalid"; }
  start nginx "$nginx_bin" -p "$dir/nginx" -e "$dir/logs/nginx-error.log" -c "$dir/nginx.conf" \
    -g "daemon off;"
  wait_http "http://127.0.0.1:${ports[1]}/health/ready" "$dir/pids/nginx" || { down; exit 1; }
  echo "http://127.0.0.1:${ports[1]}" | tee "$dir/base_url"
}

wait_log() {  # NAME: wait until the worker logs that it is ready (or dies)
  local name="$1" pid; pid="$(cut -d' ' -f1 "$dir/pids/$name")"
  for _ in $(seq 1 $((wait_s * 2))); do
    grep -q "worker ready" "$dir/logs/$name.log" 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || { echo "cluster: $name exited; see $dir/logs/$name.log" >&2; return 1; }
    sleep 0.5
  done
  echo "cluster: $name not ready after $wait_s s" >&2
  return 1
}

down() {
  [ -d "$dir/pids" ] || return 0
  local name
  # Front to back: nothing new comes in while the rest drains.
  stop nginx
  for name in $(ls "$dir/pids" | grep '^api-' || true); do stop "$name"; done
  for name in $(ls "$dir/pids" | grep '^worker-' || true); do stop "$name"; done
  stop redis
}

restart_api() {
  local f i
  for f in "$dir"/api-*.port; do
    i="$(basename "$f" .port)"; i="${i#api-}"
    stop "api-$i"
    start_api "$i" "$(cat "$f")"
    wait_http "http://127.0.0.1:$(cat "$f")/health/ready" "$dir/pids/api-$i"
  done
}

status() {
  local f
  for f in "$dir"/pids/*; do
    [ -f "$f" ] || continue
    read -r pid name _ <"$f"
    if kill -0 "$pid" 2>/dev/null; then echo "$name $pid running"; else echo "$name $pid exited"; fi
  done
  [ -n "$(ls -A "$dir/pids" 2>/dev/null)" ] && [ -f "$dir/base_url" ] && cat "$dir/base_url"
  return 0
}

cmd="${1:-}"; shift || true
case "$cmd" in
  up) up "$@" ;;
  down) down ;;
  restart-api) restart_api ;;
  status) status ;;
  *) echo "usage: scripts/cluster.sh up [--replicas N] [--workers M] | down | restart-api | status" >&2; exit 2 ;;
esac
