#!/usr/bin/env bash
# Registry pull side by side in one run: the fat image (busybox + a copy of /usr/include,
# ~118 MB, one layer) pulled from a local Docker Registry 2.8 (Debian's docker-registry on
# 127.0.0.1) by
#   berth pull            (berth's client against a berth daemon)
#   docker pull -> berth  (the docker CLI against the same berth daemon)
#   docker pull -> dockerd (the docker CLI against Debian's dockerd 20.10)
# Each timed pull starts with the image removed (`rmi`, so its blobs and layers are gone);
# page cache warm; `sync` before each run. Wall time is what a user waits for: download,
# verify and unpack.
#
# usage: bench/pull.sh [RUNS]   (default 5; medians and ratios are printed)
set -euo pipefail
. "$(dirname "$0")/lib.sh"

runs=${1:-5}
install_peers docker-registry docker.io
work=$(mktemp -d /var/tmp/berth-bench-pull.XXXXXX) # the ext4 root, where /var/lib lives
REG_PID= BERTHD_PID=
cleanup() {
  [ -n "$BERTHD_PID" ] && { kill "$BERTHD_PID" 2>/dev/null || true; wait "$BERTHD_PID" 2>/dev/null || true; }
  [ -n "$REG_PID" ] && { kill "$REG_PID" 2>/dev/null || true; wait "$REG_PID" 2>/dev/null || true; }
  stop_dockerd "$work/docker" || true
  grep -o " $work[^ ]*" /proc/self/mountinfo | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done || true
  remove_workdir "$work"
}
trap cleanup EXIT

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$bench_root/target-bench}
(cd "$bench_root" && cargo build --release -q -p berth)
BERTH=$CARGO_TARGET_DIR/release/berth
DOCKER=/usr/local/bin/docker

echo "== registry"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
reg=127.0.0.1:$port
mkdir -p "$work/registry"
cat >"$work/registry/config.yml" <<YAML
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $work/registry/storage
  delete:
    enabled: true
http:
  addr: $reg
YAML
/usr/bin/docker-registry serve "$work/registry/config.yml" >"$work/registry/log" 2>&1 &
REG_PID=$!
for _ in $(seq 100); do curl -sf "http://$reg/v2/" >/dev/null 2>&1 && break; sleep 0.1; done

echo "== fixtures"
"$bench_root/scripts/busybox-rootfs" "$work/busybox.tar"
mkdir "$work/fatroot"
tar -xf "$work/busybox.tar" -C "$work/fatroot"
cp -a /usr/include "$work/fatroot/usr/"
tar --numeric-owner -cf "$work/fat.tar" -C "$work/fatroot" .
rm -rf "$work/fatroot"
printf 'fat tarball %.1f MB, %d entries\n' "$(stat -c %s "$work/fat.tar" | awk '{print $1/1e6}')" \
  "$(tar -tf "$work/fat.tar" | wc -l)"

echo "== berth daemon, push"
echo '{}' >"$work/daemon.json"
"$BERTH" daemon -H "unix://$work/berth.sock" --data-root "$work/berth/data" \
  --exec-root "$work/berth/exec" --config-file "$work/daemon.json" --log-level warn \
  >"$work/berthd.log" 2>&1 &
BERTHD_PID=$!
for _ in $(seq 100); do [ -S "$work/berth.sock" ] && break; sleep 0.1; done
B() { "$BERTH" -H "unix://$work/berth.sock" "$@"; }
# `rmi NAME` also removes the pulled name@digest, so the image goes with its blobs and layers
# and the next pull fetches everything.
B_rmi() { B rmi "$image"; }
image=$reg/bench/fat:latest
B import "$work/fat.tar" "$image" >/dev/null
B push "$image" >/dev/null
B_rmi >/dev/null

echo "== dockerd 20.10"
start_dockerd "$work/docker" --insecure-registry "$reg"
D() { "$DOCKER" -H "$DOCKERD_HOST" "$@"; }

# timed OUT CMD...: appends the wall ms of CMD to OUT; fails loudly if CMD fails.
timed() {
  local out=$1 t0 t1
  shift
  sync
  t0=$(date +%s%N)
  if ! "$@" >"$work/last.out" 2>&1; then
    echo "failed: $*" >&2
    cat "$work/last.out" >&2
    return 1
  fi
  t1=$(date +%s%N)
  awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f\n", (b-a)/1e6}' >>"$out"
}

for i in $(seq "$runs"); do
  timed "$work/berth-cli" B pull "$image"
  B_rmi >/dev/null
  timed "$work/docker-berth" "$DOCKER" -H "unix://$work/berth.sock" pull "$image"
  B_rmi >/dev/null
  timed "$work/docker-dockerd" D pull "$image"
  D rmi "$image" >/dev/null
  echo "run $i: berth $(tail -1 "$work/berth-cli") ms, docker->berth $(tail -1 "$work/docker-berth") ms, docker->dockerd $(tail -1 "$work/docker-dockerd") ms"
done

b=$(median <"$work/berth-cli")
db=$(median <"$work/docker-berth")
dd=$(median <"$work/docker-dockerd")
echo
echo "== pull of the fat image from $reg, median of $runs (wall ms)"
printf '%-28s %10s\n' "berth pull (berth daemon)" "$b"
printf '%-28s %10s\n' "docker pull -> berth" "$db"
printf '%-28s %10s\n' "docker pull -> dockerd 20.10" "$dd"
echo "ratio dockerd / berth (docker CLI both): $(ratio "$dd" "$db")"
