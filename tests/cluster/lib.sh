# shellcheck shell=bash
# tests/cluster/lib.sh: helpers shared by the scripts of the test cluster and its real node
# (up.sh, down.sh, node-up.sh, node-down.sh, node-power.sh, node-forward.sh). Sourced, not run.
#
# A state directory made by up.sh holds a marker file, a "pids" file with one
# "<name> <pid>" line per process it started, and logs/. A recorded pid counts
# as one of ours only while /proc shows a live process whose command line
# mentions a path inside the state directory, so a recycled pid is never signalled.

# log MESSAGE / die MESSAGE: to stderr, prefixed with the script's name; die exits 1.
log() { printf '%s: %s\n' "${0##*/}" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# The file that marks a directory as a test cluster's state directory; down.sh
# removes only directories that carry it.
# shellcheck disable=SC2034 # used by the scripts that source this file
CLUSTER_MARKER=.mainstay-test-cluster

# is_ours STATE PID: true when PID is a live process (not a zombie) whose
# command line mentions a path inside STATE.
is_ours() {
    local state=$1 pid=$2 cmdline
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    cmdline=$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline") || return 1
    [[ -n "$cmdline" && "$cmdline" == *"$state/"* ]]
}

# live_processes STATE: prints "<name> <pid>" for every recorded process of
# STATE that is still running.
live_processes() {
    local state=$1 name pid
    [[ -f "$state/pids" ]] || return 0
    while read -r name pid; do
        if is_ours "$state" "$pid"; then
            printf '%s %s\n' "$name" "$pid"
        fi
    done <"$state/pids"
}

# stop_process STATE NAME PID GRACE: sends SIGTERM to PID, waits up to GRACE
# seconds for it to exit, then sends SIGKILL and waits up to 10 s more.
# Fails if it is still running after that.
stop_process() {
    local state=$1 name=$2 pid=$3 grace=$4 deadline
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + grace))
    while is_ours "$state" "$pid" && ((SECONDS < deadline)); do
        sleep 0.05
    done
    is_ours "$state" "$pid" || return 0
    printf '%s: %s (pid %s) still running %ss after SIGTERM; sending SIGKILL\n' \
        "${0##*/}" "$name" "$pid" "$grace" >&2
    kill -KILL "$pid" 2>/dev/null || true
    deadline=$((SECONDS + 10))
    while is_ours "$state" "$pid" && ((SECONDS < deadline)); do
        sleep 0.05
    done
    if is_ours "$state" "$pid"; then
        printf '%s: %s (pid %s) survived SIGKILL\n' "${0##*/}" "$name" "$pid" >&2
        return 1
    fi
}

# stop_processes STATE [GRACE_SECONDS]: stops every live recorded process of
# STATE with stop_process (GRACE_SECONDS defaults to 15), in the reverse order
# of their start: clients before the apiserver, the apiserver before etcd. An
# apiserver whose etcd is gone takes many seconds to shut down.
stop_processes() {
    local state=$1 grace=${2:-15} live name pid failed=0
    live=$(live_processes "$state" | tac)
    [[ -n "$live" ]] || return 0
    while read -r name pid; do
        stop_process "$state" "$name" "$pid" "$grace" || failed=1
    done <<<"$live"
    return "$failed"
}

# Starting and watching processes, for up.sh and node-up.sh. These use the sourcing script's
# $state (the state directory).

# start NAME COMMAND...: runs COMMAND in a session of its own (so a terminal's
# signals do not reach it), logging to logs/NAME.log, and records its pid.
start() {
    local name=$1 pid i
    shift
    # Appending: a process started again (node-power.sh) keeps its earlier log.
    setsid "$@" </dev/null >>"$state/logs/$name.log" 2>&1 &
    pid=$!
    printf '%s %s\n' "$name" "$pid" >>"$state/pids"
    # Until the background shell has exec'd the command, its command line does not name the
    # state directory and `running` would take it for an exited process: wait for the exec.
    for ((i = 0; i < 200; i++)); do
        is_ours "$state" "$pid" && return 0
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.05
    done
}

# start_node_part NAME COMMAND...: start, recording COMMAND in node/cmd-NAME so that
# node-power.sh can start the node's part NAME again the same way.
start_node_part() {
    local name=$1
    shift
    printf '%s\0' "$@" >"$state/node/cmd-$name"
    start "$name" "$@"
}

# restart_node_part NAME: starts the node's part NAME again as start_node_part recorded it.
restart_node_part() {
    local cmd=()
    mapfile -d '' cmd <"$state/node/cmd-$1"
    start "$1" "${cmd[@]}"
}

# node_ready: true while the real node reports Ready (uses $state and the cluster's env file,
# which the sourcing script has read).
node_ready() {
    [[ $(KUBECONFIG="$state/kubeconfig" "$MAINSTAY_CLUSTER_BIN/kubectl" get node "$NODE_NAME" \
        -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}') == True ]]
}

# kill_node_processes STATE: SIGKILL for the node's kubelet, kube-proxy and containerd, its
# shims and every container process (they live in the kubepods cgroups): a node that loses
# its power. Mounts, network and files stay.
kill_node_processes() {
    local state=$1 name pid proc cmdline dirs=() dir
    while read -r name pid; do
        case $name in kubelet | kube-proxy | containerd) kill -KILL "$pid" 2>/dev/null || true ;; esac
    done < <(live_processes "$state")
    for proc in /proc/[0-9]*; do
        cmdline=$(tr '\0' ' ' 2>/dev/null <"$proc/cmdline") || continue
        if [[ "$cmdline" == *containerd-shim* && "$cmdline" == *"$state/node/"* ]]; then
            kill -KILL "${proc#/proc/}" 2>/dev/null || true
        fi
    done
    for dir in /sys/fs/cgroup/*/kubepods* /sys/fs/cgroup/kubepods*; do
        [[ -d "$dir" ]] && dirs+=("$dir")
    done
    if ((${#dirs[@]})); then
        find "${dirs[@]}" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u | xargs -r kill -KILL 2>/dev/null || true
    fi
}

# running NAME: true while the process recorded as NAME runs.
running() {
    local name pid
    while read -r name pid; do
        [[ "$name" == "$1" ]] && is_ours "$state" "$pid" && return 0
    done <"$state/pids"
    return 1
}

# wait_until WHAT TIMEOUT PROCESS COMMAND...: retries COMMAND until it succeeds;
# fails after TIMEOUT seconds, or at once if PROCESS (when not empty) exits.
wait_until() {
    local what=$1 timeout=$2 process=$3 deadline
    shift 3
    deadline=$((SECONDS + timeout))
    until "$@" >/dev/null 2>&1; do
        if [[ -n "$process" ]] && ! running "$process"; then
            die "$process exited while waiting for $what; see $state/logs/$process.log"
        fi
        ((SECONDS < deadline)) || die "timed out after ${timeout}s waiting for $what"
        sleep 0.2
    done
}

# The Service ClusterIP range and the `kubernetes` Service's address in it (the
# apiserver's certificate names it).
# shellcheck disable=SC2034
SERVICE_CIDR=10.0.0.0/24
# shellcheck disable=SC2034
SERVICE_IP=10.0.0.1

# The real node of node-up.sh: a bridge of its own, an address range no one else uses (the
# kwok nodes' pod range is 10.244.0.0/16), and the locally built sandbox image.
# shellcheck disable=SC2034 # used by the scripts that source this file
NODE_BRIDGE=mstest0
# shellcheck disable=SC2034
NODE_IP=10.245.0.1
# shellcheck disable=SC2034
NODE_POD_CIDR=10.245.0.0/24
# shellcheck disable=SC2034
NODE_NAME=mainstay-node-0
# shellcheck disable=SC2034
PAUSE_IMAGE=mainstay.test/pause:v1
# The EndpointSlice that points the `kubernetes` Service at the node's apiserver forward.
# shellcheck disable=SC2034
NODE_APISERVER_SLICE=kubernetes-mainstay-node
# kube-proxy's nftables tables (family and name).
# shellcheck disable=SC2034
NODE_PROXY_TABLES=("ip kube-proxy" "ip6 kube-proxy")

# free_port_on ADDRESS: prints a random port of ADDRESS that nothing listens on.
free_port_on() {
    local p tries
    for ((tries = 0; tries < 500; tries++)); do
        p=$((20000 + RANDOM % 12000))
        if ! (exec 3<>"/dev/tcp/$1/$p") 2>/dev/null; then
            printf '%s\n' "$p"
            return 0
        fi
    done
    return 1
}

# start_forward NAME PORT TARGET: forwards connections to port PORT of the node's address to
# TARGET (host:port) with socat, started as forward-NAME, and remembers the forward in
# $state/node/forward-NAME.conf (so node-forward.sh can restart it on the same port).
# argv[0] names the node's directory, so is_ours recognises the process.
start_forward() {
    local name=$1 port=$2 target=$3
    printf '%s %s\n' "$port" "$target" >"$state/node/forward-$name.conf"
    start "forward-$name" bash -c 'exec -a "$0" socat "TCP-LISTEN:$1,bind=$2,reuseaddr,fork" "TCP:$3"' \
        "$state/node/forward-$name" "$port" "$NODE_IP" "$target"
    wait_until "the $name forward" 10 "forward-$name" bash -c "exec 3<>/dev/tcp/$NODE_IP/$port"
}

# stop_forward NAME: stops the forward-NAME listener and the per-connection children socat
# forked from it (they carry the same argv[0]), so open connections break too.
stop_forward() {
    local marker="$state/node/forward-$1 " proc cmdline pids=() i
    for proc in /proc/[0-9]*; do
        cmdline=$(tr '\0' ' ' 2>/dev/null <"$proc/cmdline") || continue
        [[ "$cmdline" == "$marker"* ]] && pids+=("${proc#/proc/}")
    done
    ((${#pids[@]})) || return 0
    kill -TERM "${pids[@]}" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        local alive=0 pid
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        ((alive)) || return 0
        sleep 0.05
    done
    kill -KILL "${pids[@]}" 2>/dev/null || true
}
