#!/usr/bin/env bash
# tests/cluster/node-power.sh: takes the real node of node-up.sh away as a machine that loses
# its power does, and brings it back as a machine that boots again, so tests can lose a node.
#
#   tests/cluster/node-power.sh <state-dir> off    # SIGKILL: kubelet, kube-proxy, containerd,
#                                                  # shims and every container process
#   tests/cluster/node-power.sh <state-dir> on     # containerd, kube-proxy and the kubelet again,
#                                                  # from node-up.sh's configuration; waits Ready
#
# While off, nothing on the node runs and nothing reports: the control plane sees the kubelet
# stop posting status (the node becomes NotReady after the controller-manager's
# --node-monitor-grace-period) and its pods stay as they were until evicted. The node's files,
# mounts, bridge and forwards stay, like a disk and a cable; node-down.sh removes them.
set -euo pipefail

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$script_dir/lib.sh"

[[ $# -eq 2 ]] || { printf 'usage: %s <state-dir> off|on\n' "${0##*/}" >&2; exit 2; }
state=$(cd "$1" && pwd)
[[ -f "$state/node/env" ]] || die "$state has no node (run node-up.sh first)"
# shellcheck disable=SC1091
source "$state/env"
node=$state/node
SECONDS=0

case "$2" in
off)
    kill_node_processes "$state"
    for part in kubelet kube-proxy containerd; do
        ! running "$part" || die "$part survived SIGKILL"
    done
    log "node $NODE_NAME off in ${SECONDS}s"
    ;;
on)
    for part in containerd kube-proxy kubelet; do
        ! running "$part" || die "$part is running: the node is not off"
    done
    restart_node_part containerd
    wait_until "containerd" 30 containerd \
        ctr --address "$node/containerd/containerd.sock" --namespace k8s.io version
    restart_node_part kube-proxy
    restart_node_part kubelet
    wait_until "node $NODE_NAME to be Ready again" 90 kubelet node_ready
    log "node $NODE_NAME back and Ready in ${SECONDS}s"
    ;;
*) die "expected off or on, not $2" ;;
esac
