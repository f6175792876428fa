#!/usr/bin/env bash
# tests/cluster/node-down.sh: removes the real node node-up.sh added to a test
# cluster, and every trace of it on this machine: its pods' containers and network
# namespaces (through the runtime, so CNI cleans up), the kubelet and containerd,
# stray shims, mounts under the node's directory, the kubepods cgroups, the bridge,
# and the kernel settings the kubelet changed. The control plane keeps running
# (down.sh stops it). A cluster without a node is not an error.
#
#   tests/cluster/node-down.sh <state-dir>
set -euo pipefail

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$script_dir/lib.sh"


[[ $# -eq 1 && -n "$1" ]] || { printf 'usage: %s <state-dir>\n' "${0##*/}" >&2; exit 2; }
[[ -d "$1" ]] || { log "$1 does not exist; nothing to remove"; exit 0; }
state=$(cd "$1" && pwd)
node=$state/node
[[ -d "$node" ]] || { log "no node in $state; nothing to remove"; exit 0; }
[[ -f "$state/$CLUSTER_MARKER" ]] || die "$state has no $CLUSTER_MARKER; leaving it alone"
SECONDS=0
sock=$node/containerd/containerd.sock

# pid_of NAME: the pid of the live process recorded as NAME.
pid_of() {
    live_processes "$state" | awk -v name="$1" '$1 == name { print $2; found = 1; exit } END { exit !found }'
}

# 1. The kubelet first, so it restarts nothing.
if pid=$(pid_of kubelet); then
    stop_process "$state" kubelet "$pid" 15 || true
fi
# kube-proxy next, then its rules (it would write them again).
if pid=$(pid_of kube-proxy); then
    stop_process "$state" kube-proxy "$pid" 15 || true
fi
for table in "${NODE_PROXY_TABLES[@]}"; do
    # shellcheck disable=SC2086 # "family name"
    if nft list table $table >/dev/null 2>&1; then
        nft delete table $table || log "cannot delete the nftables table $table"
    fi
done
# 2. Every pod, through the runtime: containers stopped, CNI DEL run, sandboxes removed.
if pid_of containerd >/dev/null; then
    crictl=$(ls "${MAINSTAY_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/mainstay}"/k8s/node-bin-*/crictl 2>/dev/null | head -n1)
    if [[ -n "$crictl" ]]; then
        timeout 60 "$crictl" --runtime-endpoint "unix://$sock" --timeout 20s rmp --force --all >&2 || log "removing pods failed; killing what is left"
    fi
fi
# 3. containerd, then any shim or container process still tied to this node.
if pid=$(pid_of containerd); then
    stop_process "$state" containerd "$pid" 15 || true
fi
kill_node_processes "$state"
# Then the kubepods cgroups, leaves first.
kubepods=()
for dir in /sys/fs/cgroup/*/kubepods* /sys/fs/cgroup/kubepods*; do
    [[ -d "$dir" ]] && kubepods+=("$dir")
done
if ((${#kubepods[@]})); then
    for ((i = 0; i < 50; i++)); do
        find "${kubepods[@]}" -depth -type d -exec rmdir {} + 2>/dev/null || true
        remaining=0
        for dir in "${kubepods[@]}"; do [[ -d "$dir" ]] && remaining=1; done
        ((remaining)) || break
        sleep 0.1
    done
fi
# The forwards to the apiserver and Postgres.
for conf in "$node"/forward-*.conf; do
    [[ -f "$conf" ]] || continue
    name=${conf##*/forward-}
    stop_forward "${name%.conf}" || true
done
# 4. Mounts under the node's directory, deepest first.
awk -v prefix="$node/" 'index($5, prefix) == 1 { print $5 }' /proc/self/mountinfo | sort -r | while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "cannot unmount $m"
done
# 5. The network: the bridge (a pod's veth went with its namespace).
if ip link show "$NODE_BRIDGE" >/dev/null 2>&1; then
    ip link delete "$NODE_BRIDGE" || log "cannot delete $NODE_BRIDGE"
fi
# 6. The kernel settings the kubelet changed.
if [[ -f "$node/sysctl.saved" ]]; then
    while read -r key value; do
        sysctl -q -w "$key=$value" >/dev/null || log "cannot restore $key=$value"
    done <"$node/sysctl.saved"
fi
# 7. The Node object and the apiserver's EndpointSlice, if the control plane still answers.
if [[ -f "$state/env" ]]; then
    # shellcheck disable=SC1091
    source "$state/env"
    KUBECONFIG="$state/kubeconfig" timeout 20 "$MAINSTAY_CLUSTER_BIN/kubectl" delete node "$NODE_NAME" \
        --ignore-not-found --wait=false >/dev/null 2>&1 || true
    KUBECONFIG="$state/kubeconfig" timeout 20 "$MAINSTAY_CLUSTER_BIN/kubectl" -n default delete endpointslice \
        "$NODE_APISERVER_SLICE" --ignore-not-found --wait=false >/dev/null 2>&1 || true
fi
rm -rf "$node"
log "node removed in ${SECONDS}s"
