#!/usr/bin/env bash
# tests/cluster/node-forward.sh: stops or restarts one of the forwards node-up.sh made from
# the real node's address to a service on the host's loopback (apiserver, postgres), on the
# same port, so tests can cut pods off from a service and give it back.
#
#   tests/cluster/node-forward.sh <state-dir> <name> stop|start
set -euo pipefail

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$script_dir/lib.sh"

[[ $# -eq 3 ]] || { printf 'usage: %s <state-dir> <name> stop|start\n' "${0##*/}" >&2; exit 2; }
state=$(cd "$1" && pwd)
name=$2
conf=$state/node/forward-$name.conf
[[ -f "$conf" ]] || die "$state has no forward named $name"
case "$3" in
stop) stop_forward "$name" ;;
start)
    read -r port target <"$conf"
    stop_forward "$name"
    start_forward "$name" "$port" "$target"
    ;;
*) die "expected stop or start, not $3" ;;
esac
