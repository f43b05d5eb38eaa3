#!/usr/bin/env bash
# Images side by side in one run: berth vs `tar -x` vs Debian's dockerd 20.10, for the busybox
# image (~2 MB) and a fat one (busybox + a copy of /usr/include: ~120 MB, ~9000 files):
#   import  (a rootfs tarball -> image)   berth import | docker import | tar -x of the tarball
#   load    (a docker-save archive)       berth load   | docker load   | tar -x of its layer
# and the first start cost of a container root (prepare + mount), plain vs remapped
# (idmapped, and the chowned-copy fallback), which must not grow with the image.
# Every run starts from an empty store; page cache warm; `sync` before each timed run.
#
# usage: bench/image.sh [RUNS]   (default 5; medians and ratios are printed)
set -euo pipefail
. "$(dirname "$0")/lib.sh"

runs=${1:-5}
work=$(mktemp -d /var/tmp/berth-bench-image.XXXXXX) # the ext4 root, where /var/lib lives
cleanup() {
  stop_dockerd "$work/docker" || true
  grep -o " $work[^ ]*" /proc/self/mountinfo | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done || true
  remove_workdir "$work"
}
trap cleanup EXIT

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$bench_root/target-bench}
(cd "$bench_root" && cargo build --release -q -p berth-snapshot --example image_bench)
B=$CARGO_TARGET_DIR/release/examples/image_bench

# CPU ticks (user+system, own and reaped children) of process $1.
ticks() { awk '{print $14+$15+$16+$17}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

# timed OUT CMD...: appends "WALL_MS CPU_MS" of CMD to OUT; fails loudly if CMD fails. CPU is
# the command's own user+system time plus, for the docker CLI, what dockerd spent meanwhile
# (the work happens there). On a shared machine CPU time is the steadier figure.
timed() {
  local out=$1 t0 t1 d0=0 d1=0
  shift
  [ -n "${DOCKERD_PID:-}" ] && d0=$(ticks "$DOCKERD_PID")
  t0=$(date +%s%N)
  if ! /usr/bin/time -f "%U %S" -o "$work/last.cpu" "$@" >"$work/last.out" 2>&1; then
    echo "failed: $*" >&2
    cat "$work/last.out" >&2
    return 1
  fi
  t1=$(date +%s%N)
  [ -n "${DOCKERD_PID:-}" ] && d1=$(ticks "$DOCKERD_PID")
  awk -v a="$t0" -v b="$t1" -v d="$((d1 - d0))" -v hz="$hz" '
    NR == 1 {printf "%.1f %.1f\n", (b-a)/1e6, ($1+$2)*1000 + d*1000/hz}' "$work/last.cpu" >>"$out"
}

echo "== fixtures"
"$bench_root/scripts/busybox-rootfs" "$work/busybox.tar"
mkdir "$work/fatroot"
tar -xf "$work/busybox.tar" -C "$work/fatroot"
cp -a /usr/include "$work/fatroot/usr/"
tar --numeric-owner -cf "$work/fat.tar" -C "$work/fatroot" .
rm -rf "$work/fatroot"
for img in busybox fat; do
  "$B" import "$work/seed" "$work/$img.tar" "$img" >/dev/null
  "$B" save "$work/seed" "$img" "$work/$img-save.tar" docker
  printf '%-8s tarball %6.1f MB, %5d entries\n' "$img" \
    "$(awk -v b="$(stat -c %s "$work/$img.tar")" 'BEGIN {print b/1048576}')" "$(tar -tf "$work/$img.tar" | wc -l)"
done

echo "== dockerd (Debian docker.io)"
install_peers docker.io
start_dockerd "$work/docker"
D=(/usr/local/bin/docker -H "$DOCKERD_HOST")
docker_empty() {
  local ids
  ids=$("${D[@]}" images -aq)
  [ -z "$ids" ] || "${D[@]}" rmi -f $ids >/dev/null
}
"${D[@]}" version --format 'dockerd {{.Server.Version}}'

fresh() { rm -rf "$work/t" "$work/b" "$work/bexec"; mkdir "$work/t"; docker_empty; sync; }

declare -A med cpu
for img in busybox fat; do
  for op in tar_import berth_import docker_import tar_load berth_load docker_load; do : >"$work/$img.$op"; done
  for i in $(seq "$runs"); do
    fresh; timed "$work/$img.tar_import" tar -xf "$work/$img.tar" -C "$work/t" --numeric-owner
    fresh; timed "$work/$img.berth_import" "$B" import "$work/b" "$work/$img.tar" "$img"
    fresh; timed "$work/$img.docker_import" "${D[@]}" import "$work/$img.tar" "$img"
    # load: the layer is the same tarball, so tar -x of it is the floor for both.
    fresh; timed "$work/$img.tar_load" tar -xf "$work/$img.tar" -C "$work/t" --numeric-owner
    fresh; timed "$work/$img.berth_load" "$B" load "$work/b" "$work/$img-save.tar"
    fresh; timed "$work/$img.docker_load" "${D[@]}" load -i "$work/$img-save.tar"
  done
  for op in tar_import berth_import docker_import tar_load berth_load docker_load; do
    med[$img.$op]=$(cut -d' ' -f1 "$work/$img.$op" | median)
    cpu[$img.$op]=$(cut -d' ' -f2 "$work/$img.$op" | median)
  done
done

echo
for kind in wall cpu; do
  echo "== import and load, $kind time: median ms of $runs runs (ratio to tar -x; berth/docker)"
  printf '%-8s %-7s %10s %10s %10s %12s %12s %13s\n' image op 'tar -x' berth docker 'berth/tar' 'docker/tar' 'berth/docker'
  for img in busybox fat; do
    for op in import load; do
      if [ "$kind" = wall ]; then
        t=${med[$img.tar_$op]} b=${med[$img.berth_$op]} d=${med[$img.docker_$op]}
      else
        t=${cpu[$img.tar_$op]} b=${cpu[$img.berth_$op]} d=${cpu[$img.docker_$op]}
      fi
      printf '%-8s %-7s %10s %10s %10s %12s %12s %13s\n' "$img" "$op" "$t" "$b" "$d" \
        "$(ratio "$b" "$t")" "$(ratio "$d" "$t")" "$(ratio "$b" "$d")"
    done
  done
  echo
done

echo
echo "== interoperability: archives go both ways with dockerd 20.10"
for img in busybox fat; do
  fresh
  "${D[@]}" load -i "$work/$img-save.tar" >/dev/null
  want=$("${D[@]}" image inspect -f '{{.Id}}' "$img:latest")
  "${D[@]}" save -o "$work/$img-docker.tar" "$img:latest"
  got=$("$B" load "$work/b" "$work/$img-docker.tar")
  [ "$want" = "$got" ] || { echo "MISMATCH: berth saved $img, docker loaded it as $want, berth loaded docker's save as $got" >&2; exit 1; }
  echo "$img: berth save -> docker load -> docker save -> berth load: same id ${got:7:12}"
done

echo
echo "== first start cost of a container root: prepare + mount, ms (map 0:100000:65536)"
echo "   first = the first container of that mapping ever; then = median of the next 9"
for img in busybox fat; do
  rm -rf "$work/b" "$work/bexec"
  "$B" import "$work/b" "$work/$img.tar" "$img" >/dev/null
  for how in plain idmapped copy; do
    printf '%-8s ' "$img"
    "$B" start "$work/b" "$work/bexec" "$img" 10 "$how"
  done
done
