# Shared helpers for the bench scripts: source it (`. "$(dirname "$0")/lib.sh"`).
# Peers come from Debian; everything a script starts it stops again, by pid.

bench_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# install_peers PKG...: apt-get install the Debian packages not yet installed, without
# starting their services (docker.io would otherwise start a system dockerd).
install_peers() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  apt-get update -qq
  local policy=/usr/sbin/policy-rc.d created=
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && created=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  [ -n "$created" ] && rm -f "$policy"
  return 0
}

# start_dockerd DIR [ARGS...]: starts Debian's dockerd on DIR/docker.sock with its own data and
# exec roots, no iptables and no bridge. Sets DOCKERD_PID and DOCKERD_HOST.
start_dockerd() {
  local dir=$1; shift
  mkdir -p "$dir"
  /usr/sbin/dockerd -H "unix://$dir/docker.sock" --data-root "$dir/data" --exec-root "$dir/exec" \
    --pidfile "$dir/docker.pid" --iptables=false --ip6tables=false --bridge=none \
    --containerd-namespace "bench$$" "$@" >"$dir/dockerd.log" 2>&1 &
  DOCKERD_PID=$!
  DOCKERD_HOST=unix://$dir/docker.sock
  local _
  for _ in $(seq 300); do
    /usr/local/bin/docker -H "$DOCKERD_HOST" version >/dev/null 2>&1 && return 0
    kill -0 "$DOCKERD_PID" 2>/dev/null || break
    sleep 0.1
  done
  echo "dockerd did not start; its log:" >&2
  tail -20 "$dir/dockerd.log" >&2
  return 1
}

# stop_dockerd DIR: stops the dockerd start_dockerd started, and unmounts what it left under DIR.
stop_dockerd() {
  local dir=$1
  if [ -n "${DOCKERD_PID:-}" ]; then
    kill "$DOCKERD_PID" 2>/dev/null || true
    wait "$DOCKERD_PID" 2>/dev/null || true
    DOCKERD_PID=
  fi
  grep -o " $dir[^ ]*" /proc/self/mountinfo | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
}

# median: reads one number per line, prints the median.
median() {
  sort -n | awk '{a[NR]=$1} END {if (NR==0) exit 1; if (NR%2) print a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2}'
}

# time_ms CMD...: runs CMD once, prints its wall time in milliseconds (3 decimals).
time_ms() {
  local t0 t1
  t0=$(date +%s%N)
  "$@" >/dev/null 2>&1
  t1=$(date +%s%N)
  awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f\n", (b-a)/1e6}'
}

# ratio A B: prints A/B with two decimals.
ratio() {
  awk -v a="$1" -v b="$2" 'BEGIN {if (b==0) print "n/a"; else printf "%.2f\n", a/b}'
}

# remove_workdir DIR: unmounts whatever is still mounted under DIR, then removes it. A few
# tries: a daemon that has just stopped may still be letting go of its files.
remove_workdir() {
  local dir=$1 _
  for _ in 1 2 3 4 5; do
    grep -o " $dir[^ ]*" /proc/self/mountinfo | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
    rm -rf "$dir" 2>/dev/null && return 0
    sleep 1
  done
  echo "warning: could not remove $dir" >&2
}
