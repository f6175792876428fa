#!/usr/bin/env bash
# tests/cluster/down.sh: stops a test control plane started by up.sh and
# removes its state directory.
#
#   tests/cluster/down.sh [--keep-state] <state-dir>
#
# Every process recorded in <state-dir>/pids gets SIGTERM, and SIGKILL if it
# has not exited 15 s later; the script fails if any is still running after
# that. Then the state directory (certificates, kubeconfigs, etcd data, logs)
# is removed, unless --keep-state is given. It refuses to remove a directory
# that up.sh did not make (one without the marker file). A missing state
# directory is not an error, so it is safe to call from cleanup traps.
set -euo pipefail

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$script_dir/lib.sh"

usage() { printf 'usage: %s [--keep-state] <state-dir>\n' "${0##*/}" >&2; exit 2; }

keep_state=0
if [[ "${1:-}" == --keep-state ]]; then
    keep_state=1
    shift
fi
[[ $# -eq 1 && -n "$1" ]] || usage

if [[ ! -e "$1" ]]; then
    log "$1 does not exist; nothing to stop"
    exit 0
fi
[[ -d "$1" ]] || die "$1 is not a directory"
state=$(cd "$1" && pwd)
[[ -f "$state/$CLUSTER_MARKER" ]] ||
    die "$state has no $CLUSTER_MARKER, so up.sh did not make it; leaving it alone"

# A real node (node-up.sh) goes first, through its runtime, so nothing it made is left.
if [[ -d "$state/node" ]]; then
    "$script_dir/node-down.sh" "$state" || log "removing the real node failed; stopping the rest anyway"
fi
stop_processes "$state" 15 || die "could not stop every process of $state"

if ((keep_state)); then
    log "stopped; kept $state"
else
    rm -rf "$state"
    log "stopped; removed $state"
fi
