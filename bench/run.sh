#!/usr/bin/env bash
# `docker run --rm busybox true`, side by side in one run: the docker CLI against berth and
# against Debian's dockerd 20.10, both with --userns-remap=default; `berth run --rm` (the
# berth client against berth); and, as the floor, bare `crun run` of the same busybox rootfs
# with the same user namespace map (0 -> 100000 x65536). Prints each median and the ratios.
#
#   bench/run.sh            (N=20 runs each; N=50 bench/run.sh for more)
#
# Everything it starts (berth daemon, dockerd) it stops again by pid; mounts under its work
# directory are unmounted. --userns-remap=default uses the real /etc (dockremap is created
# if missing, as both daemons do).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$bench_root"

N=${N:-20}
DOCKER=/usr/local/bin/docker

install_peers docker.io crun jq
cargo build --release -q -p berth
BERTH=${CARGO_TARGET_DIR:-$bench_root/target}/release/berth

work=$(mktemp -d /tmp/berth-bench-XXXXXX)
# dockerd refuses a remapped root under a directory the remapped root cannot traverse.
chmod 755 "$work"
BERTH_PID=
cleanup() {
  if [ -n "$BERTH_PID" ]; then
    kill "$BERTH_PID" 2>/dev/null || true
    wait "$BERTH_PID" 2>/dev/null || true
  fi
  stop_dockerd "$work/dockerd"
  remove_workdir "$work"
}
trap cleanup EXIT

scripts/busybox-rootfs "$work/busybox.tar" >/dev/null

# berth daemon, remapped, on its own socket and roots.
echo '{}' >"$work/berth.json"
"$BERTH" daemon -H "unix://$work/berth.sock" --data-root "$work/berth/data" --exec-root "$work/berth/exec" \
  --pidfile "$work/berth.pid" --config-file "$work/berth.json" --userns-remap=default --log-level warn \
  >"$work/berth.log" 2>&1 &
BERTH_PID=$!
BERTH_HOST=unix://$work/berth.sock
for _ in $(seq 300); do
  $DOCKER -H "$BERTH_HOST" version >/dev/null 2>&1 && break
  kill -0 "$BERTH_PID" 2>/dev/null || { cat "$work/berth.log" >&2; exit 1; }
  sleep 0.1
done
$DOCKER -H "$BERTH_HOST" import "$work/busybox.tar" busybox >/dev/null

start_dockerd "$work/dockerd" --userns-remap=default
$DOCKER -H "$DOCKERD_HOST" import "$work/busybox.tar" busybox >/dev/null

# The floor: bare crun on a bundle of the same rootfs, user-namespaced, chowned to the map.
# crun refuses this machine's hybrid cgroup layout, so it runs in a private mount namespace
# without /sys/fs/cgroup/unified; the timing is taken inside, around `crun run` alone.
mkdir -p "$work/crun/rootfs"
tar -xf "$work/busybox.tar" -C "$work/crun/rootfs" --numeric-owner
chown -R 100000:100000 "$work/crun/rootfs"
(cd "$work/crun" && crun spec)
jq '.process.args = ["true"] | .process.terminal = false
    | .linux.namespaces += [{"type": "user"}]
    | .linux.uidMappings = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    | .linux.gidMappings = [{"containerID": 0, "hostID": 100000, "size": 65536}]' \
  "$work/crun/config.json" >"$work/crun/c.json" && mv "$work/crun/c.json" "$work/crun/config.json"
crun_ms() {
  unshare -m --propagation private bash -c '
    umount /sys/fs/cgroup/unified 2>/dev/null
    id=b$RANDOM
    t0=$EPOCHREALTIME
    crun --root "$1/state" run --bundle "$1" "$id" >/dev/null 2>&1 </dev/null || exit 1
    t1=$EPOCHREALTIME
    crun --root "$1/state" delete --force "$id" >/dev/null 2>&1
    awk -v a="$t0" -v b="$t1" "BEGIN {printf \"%.3f\n\", (b-a)*1000}"' _ "$work/crun"
}

# One warm-up run each (first use of the image, caches).
$DOCKER -H "$BERTH_HOST" run --rm busybox true
$DOCKER -H "$DOCKERD_HOST" run --rm busybox true
"$BERTH" -H "$BERTH_HOST" run --rm busybox true
crun_ms >/dev/null

# Interleaved, so that load on the shared machine hits all three alike.
for _ in $(seq "$N"); do
  time_ms $DOCKER -H "$BERTH_HOST" run --rm busybox true >>"$work/docker-berth.ms"
  time_ms $DOCKER -H "$DOCKERD_HOST" run --rm busybox true >>"$work/docker-dockerd.ms"
  time_ms "$BERTH" -H "$BERTH_HOST" run --rm busybox true >>"$work/berth-berth.ms"
  crun_ms >>"$work/crun.ms"
done

# Each run must have worked: check the last one's exit status too.
$DOCKER -H "$BERTH_HOST" run --rm busybox true
"$BERTH" -H "$BERTH_HOST" run --rm busybox true

m_db=$(median <"$work/docker-berth.ms")
m_dd=$(median <"$work/docker-dockerd.ms")
m_bb=$(median <"$work/berth-berth.ms")
m_cr=$(median <"$work/crun.ms")
printf '\nrun --rm busybox true, --userns-remap=default, median of %s (ms)\n' "$N"
printf '  %-38s %8s\n' "docker CLI -> dockerd 20.10" "$m_dd"
printf '  %-38s %8s   (dockerd / berth = %sx)\n' "docker CLI -> berth" "$m_db" "$(ratio "$m_dd" "$m_db")"
printf '  %-38s %8s   (dockerd / berth = %sx)\n' "berth run -> berth" "$m_bb" "$(ratio "$m_dd" "$m_bb")"
printf '  %-38s %8s   (berth run / crun = %sx)\n' "bare crun run (same rootfs and map)" "$m_cr" "$(ratio "$m_bb" "$m_cr")"
