#!/usr/bin/env bash
# Builds Kubernetes server binaries from the Go module proxy into a cache
# outside the repo, for the e2e tests (DESIGN.md §6).
#
#   hack/kube.sh [BINARY...]   default: kube-apiserver
#   hack/kube.sh dir           print the cache's bin directory
#
# BINARY is one of kube-apiserver, kube-controller-manager, kube-scheduler,
# kubectl (the client the e2e tests drive), ginkgo, e2e.test (the conformance
# suite, `go test -c` of test/e2e) or agnhost (the e2e test image's one
# binary).
# A scratch module requires k8s.io/kubernetes at $KUBE_VERSION and pins every
# k8s.io/* staging module (a ./staging replace in kubernetes' own go.mod) to
# the matching v0.Y.Z tag. A binary already in the cache that answers
# --version is not built again.
set -euo pipefail

KUBE_VERSION=${KUBE_VERSION:-v1.37.2}
cache=${EDGEHIVE_CACHE:-$HOME/.cache/edgehive}/kubernetes-$KUBE_VERSION
bindir=$cache/bin
srcdir=$cache/src
GO=${GO:-go}

log() { echo "kube.sh: $*" >&2; }

if [ "${1:-}" = "dir" ]; then
  echo "$bindir"
  exit 0
fi

bins=("$@")
[ ${#bins[@]} -gt 0 ] || bins=(kube-apiserver)
for b in "${bins[@]}"; do
  case "$b" in
    kube-apiserver | kube-controller-manager | kube-scheduler | kubectl | e2e.test | agnhost | ginkgo) ;;
    *) log "unknown binary $b (want kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, e2e.test, agnhost or ginkgo)"; exit 2 ;;
  esac
done

# v1.37.2 -> staging modules are tagged v0.37.2
staging_version=v0.${KUBE_VERSION#v1.}
major=${KUBE_VERSION#v}
major=${major%%.*}
minor=${KUBE_VERSION#v*.}
minor=${minor%%.*}

write_module() {
  mkdir -p "$srcdir" "$bindir"
  local modfile
  modfile=$("$GO" mod download -json "k8s.io/kubernetes@$KUBE_VERSION" |
    sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
  if [ -z "$modfile" ] || [ ! -f "$modfile" ]; then
    log "could not download k8s.io/kubernetes@$KUBE_VERSION's go.mod"
    exit 1
  fi
  local staging
  staging=$(awk '$2 == "=>" && $3 ~ /^\.\/staging\// {print $1}' "$modfile" | sort -u)
  if [ -z "$staging" ]; then
    log "no staging replaces found in $modfile"
    exit 1
  fi
  local goversion
  goversion=$(awk '$1 == "go" {print $2; exit}' "$modfile")
  {
    echo "// written by hack/kube.sh; builds Kubernetes $KUBE_VERSION server binaries"
    echo "module edgehive.local/kubebuild"
    echo
    echo "go $goversion"
    echo
    echo "require k8s.io/kubernetes $KUBE_VERSION"
    echo
    echo "replace ("
    local m
    for m in $staging; do
      echo "	$m => $m $staging_version"
    done
    echo ")"
  } >"$srcdir/go.mod.new"
  if ! cmp -s "$srcdir/go.mod.new" "$srcdir/go.mod" 2>/dev/null; then
    mv "$srcdir/go.mod.new" "$srcdir/go.mod"
    rm -f "$srcdir/go.sum"
  else
    rm -f "$srcdir/go.mod.new"
  fi
}

# The version the binaries report (and compute their compatibility version
# from) is stamped the way Kubernetes' own hack/lib/version.sh does it.
version_ldflags() {
  local p f=""
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    f+=" -X $p.gitVersion=$KUBE_VERSION -X $p.gitMajor=$major -X $p.gitMinor=$minor"
    f+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  echo "$f"
}

# cached: the binary is there and runs. The server binaries answer
# --version; e2e.test and agnhost have no such flag, so running their help
# (whatever its exit status) proves only that they execute: 126/127 do not.
cached() {
  local b=$1 rc=0
  [ -x "$bindir/$b" ] || return 1
  case "$b" in
    ginkgo) "$bindir/$b" version >/dev/null 2>&1 ;;
    # kubectl version would ask a server; --client answers alone.
    kubectl) "$bindir/$b" version --client >/dev/null 2>&1 ;;
    e2e.test | agnhost)
      "$bindir/$b" --help >/dev/null 2>&1 || rc=$?
      [ "$rc" -ne 126 ] && [ "$rc" -ne 127 ] ;;
    *) "$bindir/$b" --version >/dev/null 2>&1 ;;
  esac
}

for b in "${bins[@]}"; do
  if cached "$b"; then
    log "$b: cached at $bindir/$b"
    continue
  fi
  write_module
  log "building $b $KUBE_VERSION into $bindir (several minutes the first time)"
  start=$(date +%s)
  (
    cd "$srcdir"
    # -mod=mod: let the build fill go.sum from the proxy's checksummed modules.
    export GOFLAGS="${GOFLAGS:-} -mod=mod" CGO_ENABLED=0
    case "$b" in
      e2e.test)
        "$GO" test -c -trimpath -ldflags "-s -w$(version_ldflags)" \
          -o "$bindir/$b.tmp" k8s.io/kubernetes/test/e2e ;;
      agnhost)
        "$GO" build -trimpath -ldflags "-s -w" \
          -o "$bindir/$b.tmp" k8s.io/kubernetes/test/images/agnhost ;;
      ginkgo)
        # The CLI at the version e2e.test was built with, to run it in
        # parallel processes.
        "$GO" build -trimpath -ldflags "-s -w" \
          -o "$bindir/$b.tmp" github.com/onsi/ginkgo/v2/ginkgo ;;
      *)
        "$GO" build -trimpath -ldflags "-s -w$(version_ldflags)" \
          -o "$bindir/$b.tmp" "k8s.io/kubernetes/cmd/$b" ;;
    esac
  )
  mv "$bindir/$b.tmp" "$bindir/$b"
  log "$b: built in $(($(date +%s) - start)) s"
done
