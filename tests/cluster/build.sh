#!/usr/bin/env bash
# tests/cluster/build.sh: builds the binaries of Mainstay's local test control
# plane from Go modules (no container engine needed) and prints the directory
# holding them on stdout. Everything else it says goes to stderr.
#
#   bin_dir=$(tests/cluster/build.sh)          # the control plane
#   node_dir=$(tests/cluster/build.sh node)    # a real node's binaries
#   obs_dir=$(tests/cluster/build.sh observability)   # tools that check telemetry
#
# What it builds, at pinned versions (see the variables below):
#   kube-apiserver, kube-controller-manager, kube-scheduler, kubectl
#       from k8s.io/kubernetes through a generated wrapper module: the upstream
#       go.mod requires its staging modules (k8s.io/api, ...) at v0.0.0 and
#       replaces them with local paths, which do not exist in the published
#       module, so the wrapper replaces each of them with its published v0.X.Y.
#       The list is read from the tag's own go.mod, since it changes between
#       releases.
#   etcd
#       through a wrapper module whose main calls etcdmain.Main, requiring the
#       published versions of the go.etcd.io/etcd/* modules that the server
#       module replaces with relative paths.
#   kwok, helm
#       with plain `go install module/cmd@version`.
# With `node`, instead, what a real node needs besides containerd, runc and the
# CNI plugins (Debian packages, see node-up.sh):
#   kubelet, kube-proxy
#       from k8s.io/kubernetes, through the same wrapper module
#   crictl
#       `go install sigs.k8s.io/cri-tools/cmd/crictl@version`
#   pause
#       the sandbox process, compiled with `gcc -static` from
#       build/pause/linux/pause.c in the k8s.io/kubernetes module
# With `observability`, the tools the tests hold Mainstay's telemetry to:
#   promtool
#       Prometheus's own checker of the metrics text format,
#       `go install github.com/prometheus/prometheus/cmd/promtool@version`
#   monitoring-crds/
#       the Prometheus Operator's ServiceMonitor and PodMonitor CRDs, generated
#       with controller-gen from its published API module (the CRD YAML itself
#       is not in a module the proxy serves), for the chart's monitors
#   mainstay-otel-receiver
#       an OpenTelemetry Collector with only the OTLP receiver and the file
#       exporter (tests/cluster/otel-receiver: our main over the collector's
#       modules, pinned in its go.mod/go.sum), that spans are exported to
#
# Caches live outside the repository, under
#   ${MAINSTAY_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/mainstay}/k8s/
# with the Go module and build caches in gomod/ and gocache/, and the binaries
# in bin-<k8s>-<etcd>-<kwok>-<helm>/ (node: node-bin-<k8s>-<crictl>/; observability:
# obs-bin-<prometheus>-<prometheus-operator>-<collector>/). When that directory is complete the
# script only prints it. A build happens in a temporary directory beside it and
# is renamed into place at the end, so an interrupted build leaves no half
# cache; a lock file serialises concurrent builds.
#
# Needs: go >= 1.26 on PATH and the Go module proxy (or GOPROXY) reachable.
# A cold build on 2 cores takes tens of minutes; see README.md.
set -euo pipefail

K8S_VERSION=v1.35.8
ETCD_VERSION=v3.6.16
KWOK_VERSION=v0.8.0
HELM_VERSION=v3.21.4
CRICTL_VERSION=v1.34.0
# Prometheus v3.16.0: its Go module numbers v3.x.y as v0.3xx.y.
PROMETHEUS_MODULE_VERSION=v0.316.0
PROMETHEUS_VERSION=3.16.0
PROMETHEUS_OPERATOR_VERSION=v0.95.2
CONTROLLER_TOOLS_VERSION=v0.19.0
# The OpenTelemetry Collector release tests/cluster/otel-receiver/go.mod pins.
OTEL_COLLECTOR_VERSION=v0.165.0

set_name=${1:-control-plane}
cache_dir="${MAINSTAY_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/mainstay}/k8s"
case "$set_name" in
control-plane)
    BINARIES=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok helm)
    bin_dir="$cache_dir/bin-$K8S_VERSION-$ETCD_VERSION-$KWOK_VERSION-$HELM_VERSION"
    ;;
node)
    BINARIES=(kubelet kube-proxy crictl pause)
    bin_dir="$cache_dir/node-bin-$K8S_VERSION-$CRICTL_VERSION"
    ;;
observability)
    BINARIES=(promtool monitoring-crds/monitoring.coreos.com_servicemonitors.yaml monitoring-crds/monitoring.coreos.com_podmonitors.yaml
        mainstay-otel-receiver)
    bin_dir="$cache_dir/obs-bin-v$PROMETHEUS_VERSION-$PROMETHEUS_OPERATOR_VERSION-$OTEL_COLLECTOR_VERSION"
    ;;
*)
    printf 'usage: %s [control-plane|node|observability]\n' "${0##*/}" >&2
    exit 2
    ;;
esac

have_all() {
    local b
    for b in "${BINARIES[@]}"; do
        [[ -x "$bin_dir/$b" || ( "$b" == *.yaml && -s "$bin_dir/$b" ) ]] || return 1
    done
}

# Fast path: nothing to do.
if have_all; then
    printf '%s\n' "$bin_dir"
    exit 0
fi

log() { printf 'build.sh: [%4ss] %s\n' "$SECONDS" "$*" >&2; }
die() { log "error: $*"; exit 1; }

command -v go >/dev/null || die "go is not on PATH (need go >= 1.26)"
go_version=$(go env GOVERSION)
go_minor=$(sed -E 's/^go1\.([0-9]+).*/\1/' <<<"$go_version")
[[ "$go_minor" =~ ^[0-9]+$ && "$go_minor" -ge 26 ]] ||
    die "need go >= 1.26 (kwok and helm require it), found $go_version"

mkdir -p "$cache_dir"
exec 9>"$cache_dir/build.lock"
if ! flock -n 9; then
    log "another build holds $cache_dir/build.lock; waiting"
    flock 9
fi
# Another build may have finished while we waited.
if have_all; then
    printf '%s\n' "$bin_dir"
    exit 0
fi

work=$(mktemp -d "$cache_dir/.build.XXXXXX")
cleanup() { rm -rf "$work"; }
trap cleanup EXIT

export GOMODCACHE="$cache_dir/gomod"
export GOCACHE="$cache_dir/gocache"
export GOTOOLCHAIN=local
export GOWORK=off
export GO111MODULE=on
export CGO_ENABLED=0
# -modcacherw keeps the module cache removable with a plain rm -rf.
export GOFLAGS="-trimpath -buildvcs=false -modcacherw"
mkdir -p "$work/bin"

SECONDS=0
log "building into $bin_dir with $go_version (GOMODCACHE=$GOMODCACHE)"

# Prints the path of MODULE@VERSION's go.mod in the module cache, downloading
# the module (its source is needed for the build anyway).
module_gomod() {
    local json
    json=$(cd "$work" && go mod download -json "$1") ||
        die "cannot download $1"
    sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p' <<<"$json"
}

# Prints the directives of a go.mod that the wrapper must repeat to build the
# same way: the go line and any godebug lines.
go_and_godebug_lines() {
    awk '
        /^go [0-9]/ { print; next }
        /^godebug \(/ { inblock = 1; print; next }
        inblock { print; if ($0 ~ /^\)/) inblock = 0; next }
        /^godebug / { print }
    ' "$1"
}

# Prints the module paths that a go.mod replaces with a local path, in either
# block or single-line form: "path => ./dir" or "path => ../dir".
locally_replaced_modules() {
    awk '
        { sub(/^[[:space:]]*replace[[:space:]]+/, "") }
        $2 == "=>" && $3 ~ /^\.\.?\// { print $1 }
    ' "$1"
}

# build_kubernetes COMPONENT...: builds cmd/COMPONENT of k8s.io/kubernetes.
build_kubernetes() {
    local dir="$work/kubernetes" upstream staging_version m
    local components=("$@")
    staging_version="v0.${K8S_VERSION#v1.}"
    log "kubernetes $K8S_VERSION (staging modules at $staging_version)"
    upstream=$(module_gomod "k8s.io/kubernetes@$K8S_VERSION")
    [[ -f "$upstream" ]] || die "no go.mod for k8s.io/kubernetes@$K8S_VERSION"

    mkdir -p "$dir"
    {
        echo "module mainstay.test/cluster/kubernetes"
        echo
        go_and_godebug_lines "$upstream"
        echo
        echo "require k8s.io/kubernetes $K8S_VERSION"
        echo
        echo "replace ("
        while read -r m; do
            [[ "$m" == k8s.io/* ]] || die "unexpected local replace of $m in k8s.io/kubernetes"
            printf '\t%s => %s %s\n' "$m" "$m" "$staging_version"
        done < <(locally_replaced_modules "$upstream")
        echo ")"
    } >"$dir/go.mod"
    grep -q '=>' "$dir/go.mod" || die "found no staging replaces in $upstream"

    local pkgs=() c
    for c in "${components[@]}"; do
        pkgs+=("k8s.io/kubernetes/cmd/$c")
    done
    (cd "$dir" && go get "${pkgs[@]/%/@$K8S_VERSION}" >&2) ||
        die "resolving kubernetes modules failed"

    local ldflags="-s -w" pkg
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        ldflags+=" -X $pkg.gitVersion=$K8S_VERSION"
        ldflags+=" -X $pkg.gitMajor=1"
        ldflags+=" -X $pkg.gitMinor=$(cut -d. -f2 <<<"$K8S_VERSION")"
        ldflags+=" -X $pkg.gitTreeState=clean"
    done
    (cd "$dir" && go build -ldflags "$ldflags" -o "$work/bin/" "${pkgs[@]}") ||
        die "building kubernetes components failed"
}

build_etcd() {
    local dir="$work/etcd" upstream m
    log "etcd $ETCD_VERSION"
    upstream=$(module_gomod "go.etcd.io/etcd/server/v3@$ETCD_VERSION")
    [[ -f "$upstream" ]] || die "no go.mod for go.etcd.io/etcd/server/v3@$ETCD_VERSION"

    mkdir -p "$dir"
    {
        echo "module mainstay.test/cluster/etcd"
        echo
        go_and_godebug_lines "$upstream"
        echo
        echo "require ("
        printf '\t%s %s\n' go.etcd.io/etcd/server/v3 "$ETCD_VERSION"
        while read -r m; do
            [[ "$m" == go.etcd.io/etcd/* ]] || continue
            printf '\t%s %s\n' "$m" "$ETCD_VERSION"
        done < <(locally_replaced_modules "$upstream")
        echo ")"
    } >"$dir/go.mod"
    cat >"$dir/main.go" <<'EOF'
// Command etcd is the etcd server, built from its published module.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
EOF
    (cd "$dir" && go get "go.etcd.io/etcd/server/v3/etcdmain@$ETCD_VERSION" >&2) ||
        die "resolving etcd modules failed"
    (cd "$dir" && go build -ldflags "-s -w" -o "$work/bin/etcd" .) ||
        die "building etcd failed"
}

build_kwok() {
    log "kwok $KWOK_VERSION"
    (cd "$work" && GOBIN="$work/bin" go install \
        -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION" \
        "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION") || die "building kwok failed"
}

build_helm() {
    local upstream client_go minor ldflags
    log "helm $HELM_VERSION"
    # Like helm's Makefile: the Kubernetes version that `helm template` and
    # `helm lint` assume by default follows the client-go helm is built with;
    # unset, it would be v1.20.
    upstream=$(module_gomod "helm.sh/helm/v3@$HELM_VERSION")
    client_go=$(awk '$1 == "k8s.io/client-go" { print $2; exit }' "$upstream")
    [[ "$client_go" =~ ^v0\.([0-9]+)\. ]] || die "cannot find client-go's version in $upstream"
    minor=${BASH_REMATCH[1]}
    ldflags="-s -w"
    ldflags+=" -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
    ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
    local pkg
    for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
        ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$minor"
    done
    (cd "$work" && GOBIN="$work/bin" go install -ldflags "$ldflags" \
        "helm.sh/helm/v3/cmd/helm@$HELM_VERSION") || die "building helm failed"
}

build_crictl() {
    log "crictl $CRICTL_VERSION"
    (cd "$work" && GOBIN="$work/bin" go install \
        -ldflags "-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=$CRICTL_VERSION" \
        "sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION") || die "building crictl failed"
}

build_pause() {
    local json src
    log "pause (from k8s.io/kubernetes $K8S_VERSION)"
    command -v gcc >/dev/null || die "gcc is required to build the pause binary"
    json=$(cd "$work" && go mod download -json "k8s.io/kubernetes@$K8S_VERSION") ||
        die "cannot download k8s.io/kubernetes@$K8S_VERSION"
    src="$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p' <<<"$json")/build/pause/linux/pause.c"
    [[ -f "$src" ]] || die "no $src"
    gcc -Os -static -Wall -Werror -DVERSION="$K8S_VERSION" -o "$work/bin/pause" "$src" ||
        die "compiling pause failed"
}

build_promtool() {
    log "promtool $PROMETHEUS_VERSION"
    (cd "$work" && GOBIN="$work/bin" go install \
        -ldflags "-s -w -X github.com/prometheus/common/version.Version=$PROMETHEUS_VERSION" \
        "github.com/prometheus/prometheus/cmd/promtool@$PROMETHEUS_MODULE_VERSION") || die "building promtool failed"
}

build_monitoring_crds() {
    local json src
    log "ServiceMonitor and PodMonitor CRDs (prometheus-operator $PROMETHEUS_OPERATOR_VERSION, controller-gen $CONTROLLER_TOOLS_VERSION)"
    (cd "$work" && GOBIN="$work/tools" go install "sigs.k8s.io/controller-tools/cmd/controller-gen@$CONTROLLER_TOOLS_VERSION") ||
        die "building controller-gen failed"
    json=$(cd "$work" && go mod download -json "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring@$PROMETHEUS_OPERATOR_VERSION") ||
        die "cannot download the prometheus-operator API module"
    src=$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p' <<<"$json")
    [[ -d "$src/v1" ]] || die "no v1 API in $src"
    # The module cache is read-only: generate from a copy.
    cp -r "$src" "$work/monitoring" && chmod -R u+w "$work/monitoring"
    (cd "$work/monitoring" && "$work/tools/controller-gen" crd:crdVersions=v1,allowDangerousTypes=true paths=./v1/... \
        output:crd:dir="$work/crds") >&2 || die "generating the monitoring CRDs failed"
    mkdir -p "$work/bin/monitoring-crds"
    local kind
    for kind in servicemonitors podmonitors; do
        cp "$work/crds/monitoring.coreos.com_$kind.yaml" "$work/bin/monitoring-crds/" || die "no $kind CRD generated"
    done
}

build_otel_receiver() {
    log "OTLP receiver (OpenTelemetry Collector $OTEL_COLLECTOR_VERSION: OTLP receiver, file exporter)"
    # Built from a copy: the build must not write into the repository.
    cp -r "$(dirname "${BASH_SOURCE[0]}")/otel-receiver" "$work/otel-receiver"
    grep -q "go.opentelemetry.io/collector/otelcol $OTEL_COLLECTOR_VERSION\$" "$work/otel-receiver/go.mod" ||
        die "otel-receiver/go.mod does not pin the collector at $OTEL_COLLECTOR_VERSION"
    (cd "$work/otel-receiver" && go build -ldflags "-s -w" -o "$work/bin/mainstay-otel-receiver" .) ||
        die "building the OTLP receiver failed"
}

if [[ "$set_name" == node ]]; then
    build_crictl
    build_pause
    build_kubernetes kubelet kube-proxy
elif [[ "$set_name" == observability ]]; then
    build_promtool
    build_monitoring_crds
    build_otel_receiver
else
    build_kwok
    build_helm
    build_etcd
    build_kubernetes kube-apiserver kube-controller-manager kube-scheduler kubectl
fi

# A binary that does not start, or reports another version, is not worth caching.
check_version() {
    local name=$1 want=$2 got
    shift 2
    got=$("$work/bin/$name" "$@" 2>&1) || die "$name $* failed: $got"
    log "$name: $(head -n1 <<<"$got")"
    [[ "$got" == *"$want"* ]] || die "$name reports '$got', expected $want"
}
if [[ "$set_name" == node ]]; then
    for b in kubelet kube-proxy; do
        check_version "$b" "$K8S_VERSION" --version
    done
    check_version crictl "${CRICTL_VERSION#v}" --version
    [[ -x "$work/bin/pause" ]] || die "no pause binary"
elif [[ "$set_name" == observability ]]; then
    check_version promtool "$PROMETHEUS_VERSION" --version
    check_version mainstay-otel-receiver "${OTEL_COLLECTOR_VERSION#v}" --version
else
    check_version etcd "${ETCD_VERSION#v}" --version
    for b in kube-apiserver kube-controller-manager kube-scheduler; do
        check_version "$b" "$K8S_VERSION" --version
    done
    check_version kubectl "$K8S_VERSION" version --client
    check_version kwok "${KWOK_VERSION#v}" --version
    check_version helm "$HELM_VERSION" version --short
fi

rm -rf "$bin_dir"
mv -T "$work/bin" "$bin_dir"
log "done in ${SECONDS}s"
printf '%s\n' "$bin_dir"
