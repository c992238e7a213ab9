#!/usr/bin/env bash
# A private containerd for the CRI tests: its own config, root, state, socket
# and CNI network under DIR. It never touches a system containerd.
#
#   hack/containerd.sh start DIR   install what is missing, write the config, start, wait
#   hack/containerd.sh stop DIR    stop it by its pid file, clean up mounts under DIR
#   hack/containerd.sh env DIR     print the environment the tests read
#
# No image can be pulled: containerd runs with HTTP(S)_PROXY pointing at a
# closed local port. Images come from `go run ./hack/images`.
set -euo pipefail

cmd=${1:-}
dir=${2:-}
if [ -z "$cmd" ] || [ -z "$dir" ]; then
  echo "usage: $0 start|stop|env DIR" >&2
  exit 2
fi
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
sock=$dir/containerd.sock
pidfile=$dir/containerd.pid

# The bridge this containerd's CNI network uses; unique per DIR is not needed
# (one test containerd at a time), but it must differ from the system's cni0.
bridge=${EDGEHIVE_CNI_BRIDGE:-ehcni0}
subnet=${EDGEHIVE_CNI_SUBNET:-10.88.77.0/24}

log() { echo "containerd.sh: $*" >&2; }

install_missing() {
  local need=()
  command -v containerd >/dev/null 2>&1 || need+=(containerd)
  command -v runc >/dev/null 2>&1 || need+=(runc)
  [ -x /usr/lib/cni/bridge ] || dpkg -s containernetworking-plugins >/dev/null 2>&1 || need+=(containernetworking-plugins)
  dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
  if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    local sudo_cmd=""
    [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need[@]}" >/dev/null
  fi
}

# overlayfs works when the kernel can mount an overlay whose upper dir is on
# the filesystem holding DIR; otherwise fall back to the native snapshotter.
pick_snapshotter() {
  local t
  t=$(mktemp -d "$dir/.ovltest.XXXXXX")
  mkdir -p "$t/lower" "$t/upper" "$t/work" "$t/merged"
  local s=native
  if mount -t overlay overlay -o "lowerdir=$t/lower,upperdir=$t/upper,workdir=$t/work" "$t/merged" 2>/dev/null; then
    if touch "$t/merged/x" 2>/dev/null; then s=overlayfs; fi
    umount "$t/merged" || true
  fi
  rm -rf "$t"
  echo "$s"
}

running() {
  [ -f "$pidfile" ] || return 1
  local pid
  pid=$(cat "$pidfile")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && \
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "--config $dir/config.toml"
}

write_config() {
  local snap=$1 major
  major=$(containerd --version | awk '{print $3}' | sed 's/^v//' | cut -d. -f1)
  if [ "$major" != "1" ]; then
    log "containerd $(containerd --version | awk '{print $3}') found; this config is version 2 (containerd 1.x)"
    exit 1
  fi
  mkdir -p "$dir/root" "$dir/state" "$dir/cni" "$dir/cni-state"
  cat >"$dir/config.toml" <<EOF
# written by hack/containerd.sh; containerd $(containerd --version | awk '{print $3}')
version = 2
root = "$dir/root"
state = "$dir/state"
oom_score = 0

[grpc]
  address = "$sock"

[ttrpc]
  address = "$dir/containerd.sock.ttrpc"

[debug]
  address = ""
  level = "info"

[metrics]
  address = ""

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "edgehive.local/pause:3.10"
    restrict_oom_score_adj = true
    enable_selinux = false
    disable_apparmor = true
    # sandbox network namespaces under DIR/state, so stop can unmount them
    netns_mounts_under_state_dir = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "$snap"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"
      conf_dir = "$dir/cni"
      max_conf_num = 1
  [plugins."io.containerd.internal.v1.opt"]
    path = "$dir/opt"
  [plugins."io.containerd.snapshotter.v1.overlayfs"]
    root_path = ""
EOF
  cat >"$dir/cni/10-edgehive.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "edgehive-test",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$bridge",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$subnet"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "$dir/cni-state/ipam"
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}},
    {"type": "loopback"}
  ]
}
EOF
}

start() {
  install_missing
  if running; then
    log "already running (pid $(cat "$pidfile"))"
    return 0
  fi
  # No pod of an earlier run can be alive: drop its IP reservations.
  rm -rf "$dir/cni-state"
  local snap
  snap=$(pick_snapshotter)
  write_config "$snap"
  echo "$snap" >"$dir/snapshotter"
  log "starting containerd $(containerd --version | awk '{print $3}'), snapshotter $snap, socket $sock"
  rm -f "$sock"
  # No pull can leave the machine: every proxied request goes to a closed port.
  env -u NO_PROXY -u no_proxy \
    HTTPS_PROXY=http://127.0.0.1:9 HTTP_PROXY=http://127.0.0.1:9 \
    https_proxy=http://127.0.0.1:9 http_proxy=http://127.0.0.1:9 \
    setsid containerd --config "$dir/config.toml" >"$dir/containerd.log" 2>&1 </dev/null &
  echo $! >"$pidfile"
  local i
  for i in $(seq 1 100); do
    if ctr --address "$sock" version >/dev/null 2>&1; then
      log "ready (pid $(cat "$pidfile"))"
      return 0
    fi
    if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      log "containerd exited; last lines of $dir/containerd.log:"
      tail -20 "$dir/containerd.log" >&2
      rm -f "$pidfile"
      exit 1
    fi
    sleep 0.1
  done
  log "containerd did not answer within 10s; see $dir/containerd.log"
  stop
  exit 1
}

# The shims (containerd-shim-runc-v2) outlive containerd by design; the ones
# started for this containerd carry its socket in their command line.
shim_pids() {
  local p
  for p in $(pgrep -f '^/usr/bin/containerd-shim-runc-v2 ' 2>/dev/null); do
    if tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -q -- "-address $sock"; then
      echo "$p"
    fi
  done
}

stop() {
  if running; then
    local pid
    pid=$(cat "$pidfile")
    # Leave no container behind: kill and delete every task (a test that
    # died mid-way leaves pods running), so their shims exit cleanly.
    local ns t
    for ns in $(ctr --address "$sock" namespaces ls -q 2>/dev/null); do
      for t in $(ctr --address "$sock" -n "$ns" tasks ls -q 2>/dev/null); do
        ctr --address "$sock" -n "$ns" tasks delete --force "$t" >/dev/null 2>&1 || \
          log "could not delete task $ns/$t"
      done
    done
    kill "$pid" 2>/dev/null || true
    local i
    for i in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      log "containerd (pid $pid) did not stop in 10s; killing it"
      kill -9 "$pid" 2>/dev/null || true
    fi
    log "stopped (pid $pid)"
  else
    log "not running"
  fi
  rm -f "$pidfile"
  # Shims of containers the tests left behind, and their containers.
  local s
  for s in $(shim_pids); do
    log "killing leftover shim $s"
    pkill -9 -P "$s" 2>/dev/null || true
    kill -9 "$s" 2>/dev/null || true
  done
  # Mounts under DIR (rootfs, shm, netns), deepest first.
  local m
  for m in $(awk -v d="$dir/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r); do
    umount -R "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "could not unmount $m"
  done
  # Network namespaces the CRI plugin created for our sandboxes live under
  # /var/run/netns as cni-*; only those whose mount source belongs to us are
  # caught above. Delete the test bridge when nothing uses it any more.
  if ip link show "$bridge" >/dev/null 2>&1; then
    if [ -z "$(ls "/sys/class/net/$bridge/brif" 2>/dev/null)" ]; then
      ip link delete "$bridge" 2>/dev/null || true
    fi
  fi
  rm -f "$sock" "$sock.ttrpc"
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  env)
    echo "CONTAINERD_ADDRESS=$sock"
    echo "CONTAINERD_NAMESPACE=k8s.io"
    echo "CONTAINERD_SNAPSHOTTER=$(cat "$dir/snapshotter" 2>/dev/null || echo overlayfs)"
    echo "CONTAINERD_DIR=$dir"
    ;;
  *)
    echo "usage: $0 start|stop|env DIR" >&2
    exit 2
    ;;
esac
