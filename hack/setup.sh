#!/usr/bin/env bash
# Installs, with apt, the system packages the build and tests need, only
# when they are missing. Safe to run again.
set -euo pipefail

need=()
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
command -v gcc >/dev/null 2>&1 || need+=(gcc)
command -v git >/dev/null 2>&1 || need+=(git)
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
# e2e: Debian's etcd for the test kube-apiserver, iptables for the guard rails
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v iptables >/dev/null 2>&1 || [ -x /usr/sbin/iptables ] || need+=(iptables)
# conformance: the shell of the e2e busybox image (hack/images -sh)
[ -x /bin/bash-static ] || need+=(bash-static)

if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need[@]}" >/dev/null
fi
echo "setup: protoc $(protoc --version | awk '{print $2}'), $(go version | awk '{print $3}')"
