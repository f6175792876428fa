#!/usr/bin/env bash
# tests/cluster/node-up.sh: adds one real node to a test control plane started by
# up.sh: containerd, runc and CNI networking running real containers, and a kubelet
# registered with the cluster. Linux and root only (it creates a network bridge, mounts
# and cgroups); node-down.sh removes every trace.
#
#   tests/cluster/up.sh <state-dir>
#   tests/cluster/node-up.sh <state-dir>
#   ...
#   tests/cluster/node-down.sh <state-dir>      # before down.sh
#
# What it sets up, all under <state-dir>/node unless said otherwise:
#   packages   containerd, runc and containernetworking-plugins from apt when missing
#   binaries   kubelet, kube-proxy, crictl and the pause binary, built by `build.sh node`
#   network    bridge $NODE_BRIDGE with $NODE_IP/24, the node's address; pods get
#              addresses of 10.245.0.0/24 on it (CNI bridge + host-local + portmap,
#              no masquerade) and one route, to the Service range through the node:
#              no default route, so traffic stays on this machine
#   containerd own root, state, socket and config; overlayfs; cgroupfs; the sandbox
#              image is the locally built pause image, so nothing is ever pulled;
#              restrict_oom_score_adj (this host refuses negative OOM scores)
#   images     mainstay.test/pause:<k8s>, imported into containerd's k8s.io namespace
#   forwards   pods cannot reach 127.0.0.1 of the host, where the test apiserver and
#              Postgres listen: socat forwards a port of $NODE_IP to each (the
#              apiserver always; Postgres when MAINSTAY_TEST_DATABASE_URL names one),
#              so pods reach them on the bridge this run created and nowhere else
#   services   kube-proxy (nftables mode, its own tables) gives ClusterIP Services; the
#              `kubernetes` Service gets an EndpointSlice pointing at the apiserver
#              forward, so in-cluster clients (the operator's pod) reach the apiserver
#   kubelet    node $NODE_NAME, labelled mainstay.dev/node=real and tainted
#              mainstay.dev/node=real:NoSchedule, so only pods that ask for it (the
#              real-pod tests) land there and the kwok tier is unaffected; x509 client
#              authentication against the cluster CA, no anonymous access
# It returns once the node is Ready. Its processes are recorded in <state-dir>/pids
# (down.sh stops them too) and it writes <state-dir>/node/env (the socket, the node's
# name and address, and `ctr` and `crictl` commands for this node).
set -euo pipefail

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$script_dir/lib.sh"

usage() { printf 'usage: %s <state-dir>\n' "${0##*/}" >&2; exit 2; }

[[ $# -eq 1 && -n "$1" ]] || usage
[[ "$(uname -s)" == Linux ]] || die "a real node needs Linux (found $(uname -s))"
[[ $EUID -eq 0 ]] || die "a real node needs root (bridge, mounts, cgroups); run as root"
[[ -d "$1" ]] || die "$1 is not a test cluster's state directory (run up.sh first)"
state=$(cd "$1" && pwd)
[[ -f "$state/$CLUSTER_MARKER" && -f "$state/env" ]] || die "$state is not a running test cluster (run up.sh first)"
[[ ! -e "$state/node" ]] || die "$state already has a node; remove it with node-down.sh first"
# shellcheck disable=SC1091
source "$state/env"
pki=$state/pki

SECONDS=0
for pkg in containerd runc containernetworking-plugins socat; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
        log "installing $pkg"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$pkg" >&2 || die "apt-get install $pkg failed"
    fi
done
for tool in containerd containerd-shim-runc-v2 ctr runc ip openssl socat; do
    command -v "$tool" >/dev/null || die "$tool is required"
done
CNI_BIN=/usr/lib/cni
[[ -x "$CNI_BIN/bridge" && -x "$CNI_BIN/host-local" && -x "$CNI_BIN/portmap" ]] ||
    die "the CNI plugins (bridge, host-local, portmap) are not in $CNI_BIN"
node_bin=$("$script_dir/build.sh" node)

node=$state/node
mkdir -p "$node"/{containerd,cni,cni-ipam,kubelet,pod-logs,certs,images}
finished=0
on_exit() {
    local rc=$?
    ((finished)) && return 0
    log "startup failed (exit $rc); removing the node"
    for f in "$state/logs/containerd.log" "$state/logs/kubelet.log"; do
        [[ -s "$f" ]] && { printf '\n==> %s (last lines) <==\n' "$f" >&2; tail -n 20 "$f" >&2; }
    done
    "$script_dir/node-down.sh" "$state" || true
}
trap on_exit EXIT

# The bridge belongs to this run: a name of its own, an address range no one else uses.
if ip link show "$NODE_BRIDGE" >/dev/null 2>&1; then
    die "a network device $NODE_BRIDGE already exists (another test node?); remove it or run node-down.sh"
fi
ip link add "$NODE_BRIDGE" type bridge
ip addr add "$NODE_IP/24" dev "$NODE_BRIDGE"
ip link set "$NODE_BRIDGE" up
# Settings the kubelet changes; node-down.sh restores them.
for key in vm.overcommit_memory kernel.panic kernel.panic_on_oops; do
    printf '%s %s\n' "$key" "$(sysctl -n "$key")" >>"$node/sysctl.saved"
done

cat >"$node/cni/10-mainstay.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "mainstay-test",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$NODE_BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$NODE_POD_CIDR", "gateway": "$NODE_IP"}]],
        "routes": [{"dst": "$SERVICE_CIDR"}],
        "dataDir": "$node/cni-ipam"
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF

sock=$node/containerd/containerd.sock
cat >"$node/containerd/config.toml" <<EOF
version = 2
root = "$node/containerd/root"
state = "$node/containerd/state"
[grpc]
  address = "$sock"
[ttrpc]
  address = "$sock.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  restrict_oom_score_adj = true
  disable_apparmor = true
  netns_mounts_under_state_dir = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CNI_BIN"
    conf_dir = "$node/cni"
EOF

# forward NAME HOST:PORT: forwards a free port of the node's address to HOST:PORT (see
# start_forward in lib.sh); prints the address pods use.
forward() {
    local name=$1 target=$2 port
    port=$(free_port_on "$NODE_IP") || die "no free port on $NODE_IP"
    start_forward "$name" "$port" "$target"
    printf '%s:%s\n' "$NODE_IP" "$port"
}
apiserver_forward=$(forward apiserver "${MAINSTAY_CLUSTER_APISERVER#https://}")
postgres_forward=
if [[ -n "${MAINSTAY_TEST_DATABASE_URL:-}" ]]; then
    pg_hostport=$(python3 -c 'import sys, urllib.parse as u; p = u.urlsplit(sys.argv[1]); print(f"{p.hostname}:{p.port or 5432}")' \
        "$MAINSTAY_TEST_DATABASE_URL")
    postgres_forward=$(forward postgres "$pg_hostport")
fi

start_node_part containerd containerd --config "$node/containerd/config.toml"
ctr_() { ctr --address "$sock" --namespace k8s.io "$@"; }
wait_until "containerd" 30 containerd ctr_ version

log "importing $PAUSE_IMAGE"
python3 "$script_dir/oci-image.py" --name "$PAUSE_IMAGE" --out "$node/images/pause.tar" \
    --file "$node_bin/pause:/pause:0755" --entrypoint /pause --user 65535
ctr_ images import --no-unpack=false "$node/images/pause.tar" >&2 || die "importing the pause image failed"

# client_kubeconfig NAME SUBJECT: a client certificate signed by the cluster CA for SUBJECT
# and a kubeconfig using it, $node/NAME.kubeconfig.
client_kubeconfig() {
    local name=$1 subject=$2
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$node/certs/$name-client.key" 2>/dev/null
    openssl req -new -key "$node/certs/$name-client.key" -subj "$subject" -out "$node/certs/$name-client.csr" 2>/dev/null
    openssl x509 -req -in "$node/certs/$name-client.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
        -set_serial "0x$(openssl rand -hex 16)" -days 365 -extfile "$pki/openssl.cnf" -extensions client \
        -out "$node/certs/$name-client.crt" 2>/dev/null
    cat >"$node/$name.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: $MAINSTAY_CLUSTER_APISERVER
    certificate-authority: $pki/ca.crt
users:
- name: $name
  user:
    client-certificate: $node/certs/$name-client.crt
    client-key: $node/certs/$name-client.key
contexts:
- name: test
  context: {cluster: test, user: $name}
current-context: test
EOF
}
# The kubelet's identity is one the Node authorizer knows; kube-proxy's is bound to the
# system:node-proxier role by default.
client_kubeconfig kubelet "/O=system:nodes/CN=system:node:$NODE_NAME"
client_kubeconfig kube-proxy "/CN=system:kube-proxy"

kubelet_port=$(free_port_on "$NODE_IP")
healthz_port=$(free_port_on 127.0.0.1)
cat >"$node/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: $kubelet_port
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $healthz_port
containerRuntimeEndpoint: unix://$sock
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
makeIPTablesUtilChains: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: "50Mi"
  nodefs.available: "1%"
  nodefs.inodesFree: "1%"
  imagefs.available: "1%"
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $pki/ca.crt}
authorization:
  mode: AlwaysAllow
podLogsDir: $node/pod-logs
registerNode: true
registerWithTaints:
- {key: mainstay.dev/node, value: real, effect: NoSchedule}
serializeImagePulls: false
nodeStatusUpdateFrequency: 2s
syncFrequency: 10s
fileCheckFrequency: 20s
EOF

start_node_part kubelet "$node_bin/kubelet" \
    --config="$node/kubelet.yaml" \
    --kubeconfig="$node/kubelet.kubeconfig" \
    --root-dir="$node/kubelet" \
    --cert-dir="$node/certs" \
    --hostname-override="$NODE_NAME" \
    --node-ip="$NODE_IP" \
    --node-labels="mainstay.dev/node=real" \
    --v=1

kubectl_() { KUBECONFIG="$state/kubeconfig" "$MAINSTAY_CLUSTER_BIN/kubectl" "$@"; }

# In-cluster clients (the operator's pod) reach the apiserver through the `kubernetes`
# Service. up.sh's apiserver advertises 127.0.0.1 and manages no endpoints for it
# (--endpoint-reconciler-type=none), so the node publishes the one pods can use, its
# apiserver forward, and kube-proxy routes the Service's ClusterIP there.
kubectl_ apply -f - >/dev/null <<EOF || die "publishing the apiserver's endpoints failed"
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: $NODE_APISERVER_SLICE
  namespace: default
  labels:
    kubernetes.io/service-name: kubernetes
    endpointslice.kubernetes.io/managed-by: mainstay.dev-test-node
addressType: IPv4
endpoints:
- addresses: [$NODE_IP]
  conditions: {ready: true}
ports:
- {name: https, port: ${apiserver_forward##*:}, protocol: TCP}
EOF
# kube-proxy in nftables mode: its rules live in tables of its own (node-down.sh deletes
# them). NodePorts open on the node's address only; conntrack sysctls are left alone.
proxy_healthz_port=$(free_port_on 127.0.0.1)
proxy_metrics_port=$(free_port_on 127.0.0.1)
cat >"$node/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: nftables
clientConnection:
  kubeconfig: $node/kube-proxy.kubeconfig
hostnameOverride: $NODE_NAME
bindAddress: $NODE_IP
healthzBindAddress: 127.0.0.1:$proxy_healthz_port
metricsBindAddress: 127.0.0.1:$proxy_metrics_port
clusterCIDR: $NODE_POD_CIDR
nodePortAddresses: [$NODE_IP/32]
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
EOF
start_node_part kube-proxy "$node_bin/kube-proxy" --config="$node/kube-proxy.yaml" --v=1
proxy_synced() { curl -fsS --max-time 2 "http://127.0.0.1:$proxy_healthz_port/healthz" >/dev/null; }
wait_until "kube-proxy to program the Services" 60 kube-proxy proxy_synced

wait_until "node $NODE_NAME to be Ready" 90 kubelet node_ready

cat >"$node/env" <<EOF
# Written by tests/cluster/node-up.sh; source it to reach this test cluster's real node.
MAINSTAY_NODE_NAME=$NODE_NAME
MAINSTAY_NODE_IP=$NODE_IP
MAINSTAY_NODE_SOCKET=$sock
MAINSTAY_NODE_BIN=$node_bin
MAINSTAY_NODE_PAUSE_IMAGE=$PAUSE_IMAGE
MAINSTAY_NODE_APISERVER=$apiserver_forward
MAINSTAY_NODE_POSTGRES=$postgres_forward
EOF
finished=1
log "node $NODE_NAME Ready in ${SECONDS}s at $NODE_IP (containerd $sock)"
log "import an image:  ctr --address $sock --namespace k8s.io images import IMAGE.tar"
log "remove the node:  $script_dir/node-down.sh $state"
