#!/usr/bin/env bash
# Times `run` of a busybox container running `true` with berth-runtime, runc and crun,
# without and with a user namespace (0 -> 100000 x65536, rootfs owned accordingly), side by
# side, and prints medians and ratios.
#
#   bench/runtime.sh [N]        (N runs per case, default 30; as root)
#
# Every runtime gets the same config (`runc spec` with args ["true"] and no terminal).
# crun refuses this machine's hybrid cgroup layout: it runs in a private mount namespace
# where /sys/fs/cgroup/unified is unmounted; that namespace is entered once per case, not
# per run, so its cost is not counted.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

N=${1:-30}
[ "$(id -u)" = 0 ] || { echo "bench/runtime.sh: run as root" >&2; exit 1; }

install_peers runc crun busybox-static jq
export PATH="$HOME/.cargo/bin:$PATH"
CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target} cargo build -q --release -p berth-runtime
BERTH=${CARGO_TARGET_DIR:-$PWD/target}/release/berth-runtime

work=$(mktemp -d /tmp/bench-runtime.XXXXXX)
# runc and crun reach the rootfs as container root (host 100000): let it through.
chmod 711 "$work"
cleanup() {
  for rt in berth runc crun; do
    for st in "$work"/state-"$rt"*; do
      [ -d "$st" ] || continue
      for id in $(ls "$st" 2>/dev/null); do
        case $rt in
          berth) "$BERTH" --root "$st" delete --force "$id" >/dev/null 2>&1 || true ;;
          runc) runc --root "$st" delete --force "$id" >/dev/null 2>&1 || true ;;
          crun) crun --root "$st" delete --force "$id" >/dev/null 2>&1 || true ;;
        esac
      done
    done
  done
  remove_workdir "$work"
}
trap cleanup EXIT

# Two bundles: plain, and user-namespaced with its own chowned copy of the rootfs.
mkdir -p "$work/plain/rootfs" "$work/userns/rootfs"
scripts/busybox-rootfs "$work/busybox.tar" >/dev/null
tar -xf "$work/busybox.tar" -C "$work/plain/rootfs" --numeric-owner
tar -xf "$work/busybox.tar" -C "$work/userns/rootfs" --numeric-owner
chown -R 100000:100000 "$work/userns/rootfs"
(cd "$work/plain" && runc spec)
jq '.process.args = ["true"] | .process.terminal = false' "$work/plain/config.json" >"$work/c.json"
mv "$work/c.json" "$work/plain/config.json"
jq '.linux.namespaces += [{"type": "user"}]
    | .linux.uidMappings = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    | .linux.gidMappings = [{"containerID": 0, "hostID": 100000, "size": 65536}]' \
  "$work/plain/config.json" >"$work/userns/config.json"

# times RUNTIME_CMD BUNDLE STATE K: K timed `run`s, one wall time in ms per line. bash's
# EPOCHREALTIME: no process is spawned to read the clock.
times_fn='
times() {
  local cmd=$1 bundle=$2 state=$3 k=$4 i id t0 t1
  for i in $(seq "$k"); do
    id=b$RANDOM$i
    t0=$EPOCHREALTIME
    $cmd --root "$state" run --bundle "$bundle" "$id" >/dev/null 2>&1 </dev/null || { echo "run failed: $cmd $bundle" >&2; return 1; }
    t1=$EPOCHREALTIME
    # runc and crun keep a stopped container after run: delete it, untimed.
    $cmd --root "$state" delete --force "$id" >/dev/null 2>&1 || true
    awk -v a="$t0" -v b="$t1" "BEGIN {printf \"%.3f\n\", (b-a)*1000}"
  done
}'
eval "$times_fn"

# one CASE K: K timed runs of a case (runtime-kind), appended to $work/CASE.ms.
one() {
  local rt=${1%-*} kind=${1#*-} k=$2
  case $rt in
    berth) times "$BERTH" "$work/$kind" "$work/state-$1" "$k" ;;
    runc) times runc "$work/$kind" "$work/state-$1" "$k" ;;
    # crun's private mount namespace is set up outside the timed runs.
    crun) unshare -m --propagation private bash -c "
            umount /sys/fs/cgroup/unified
            $times_fn
            times crun '$work/$kind' '$work/state-$1' $k" ;;
  esac >>"$work/$1.ms"
}

cases=(berth-plain runc-plain crun-plain berth-userns runc-userns crun-userns)
# Warm up, untimed; then rounds of 5 runs per case, so that the load of a shared machine
# falls on every case alike.
for c in "${cases[@]}"; do one "$c" 2 && rm -f "$work/$c.ms"; done
for _ in $(seq $(((N + 4) / 5))); do
  for c in "${cases[@]}"; do one "$c" 5; done
done
declare -A med
for c in "${cases[@]}"; do med[$c]=$(median <"$work/$c.ms"); done

printf '\n%-16s %12s %12s %12s\n' "runtime" "plain (ms)" "userns (ms)" "userns cost"
for rt in berth runc crun; do
  p=${med[$rt-plain]} u=${med[$rt-userns]}
  printf '%-16s %12s %12s %12s\n' "$rt" "$p" "$u" "$(awk -v a="$u" -v b="$p" 'BEGIN {printf "%+.3f", a-b}')"
done
printf '\nratios (berth / peer, lower is faster):\n'
for peer in crun runc; do
  printf '  berth/%-5s plain %s   userns %s\n' "$peer" \
    "$(ratio "${med[berth-plain]}" "${med[$peer-plain]}")" "$(ratio "${med[berth-userns]}" "${med[$peer-userns]}")"
done
printf '\n(medians of %s runs per case of `run` of busybox `true`, interleaved; %s, %s CPUs)\n' "$(wc -l <"$work/berth-plain.ms")" "$(uname -r)" "$(nproc)"
