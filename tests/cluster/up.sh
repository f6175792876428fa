#!/usr/bin/env bash
# tests/cluster/up.sh: starts Mainstay's local Kubernetes test control plane as
# plain processes, with no container engine and no root-only features.
#
#   tests/cluster/up.sh <state-dir>
#   export KUBECONFIG=<state-dir>/kubeconfig
#   ...
#   tests/cluster/down.sh <state-dir>
#
# It builds (or finds cached) binaries with build.sh, then in <state-dir>:
#   pki/        fresh CAs (cluster, front proxy), serving and client certificates,
#               and the service account signing key, all made with openssl
#   etcd        etcd on two free random ports of 127.0.0.1
#   kube-apiserver      on a free random port of 127.0.0.1, RBAC and Node
#                       authorisation, service accounts, service range
#                       10.0.0.0/24 (routed only on node-up.sh's real node, by
#                       its kube-proxy)
#   kube-controller-manager   all controllers, per-controller service account
#                             credentials, no leader election; a node that stops
#                             reporting is NotReady after 30 s (not 50 s)
#   kube-scheduler      no leader election
#   kwok        fakes a kubelet for nodes annotated kwok.x-k8s.io/node=fake,
#               with the stages in kwok-stages.yaml: pods bound to them become
#               Running and Ready (no container runs), Job pods succeed
# and registers $MAINSTAY_CLUSTER_NODES (default 3) fake nodes kwok-node-<i>,
# labelled type=kwok, each with 32 CPUs, 256Gi memory, 110 pods and no taints.
# It returns once the nodes are Ready and untainted and the default
# ServiceAccount exists in namespace default.
#
# Files: kubeconfig (admin, group system:masters), env (ports and paths in
# shell syntax), pids ("<name> <pid>" lines, read by down.sh), logs/<name>.log.
# If startup fails or is interrupted, everything started so far is stopped and
# the logs are kept in <state-dir>/logs. <state-dir> must be absent, empty, or
# a stopped cluster's state directory (which is then replaced).
set -euo pipefail

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$script_dir/lib.sh"

usage() { printf 'usage: %s <state-dir>\n' "${0##*/}" >&2; exit 2; }

[[ $# -eq 1 && -n "$1" ]] || usage
node_count=${MAINSTAY_CLUSTER_NODES:-3}
[[ "$node_count" =~ ^[1-9][0-9]*$ && "$node_count" -le 250 ]] ||
    die "MAINSTAY_CLUSTER_NODES must be a number from 1 to 250"

POD_CIDR=10.244.0.0/16
CLUSTER_NAME=mainstay-test

for tool in openssl curl base64 setsid; do
    command -v "$tool" >/dev/null || die "$tool is required"
done

SECONDS=0
bin_dir=$("$script_dir/build.sh")

# --- the state directory --------------------------------------------------------

if [[ -e "$1" ]]; then
    [[ -d "$1" ]] || die "$1 exists and is not a directory"
    state=$(cd "$1" && pwd)
    if [[ -f "$state/$CLUSTER_MARKER" ]]; then
        [[ -z "$(live_processes "$state")" ]] ||
            die "a test cluster is running in $state; stop it with down.sh first"
        rm -rf "$state"
    elif [[ -n "$(ls -A "$state")" ]]; then
        die "$state is neither empty nor a test cluster's state directory"
    fi
fi
mkdir -p "$1"
state=$(cd "$1" && pwd)
[[ "$state" != *[[:space:]]* ]] || die "the state directory's path must not contain spaces"
touch "$state/$CLUSTER_MARKER"
mkdir -p "$state/logs" "$state/pki" "$state/kwok"
: >"$state/pids"

finished=0
on_exit() {
    local rc=$? f
    ((finished)) && return 0
    log "startup failed (exit $rc); stopping what was started"
    if ((rc != 130 && rc != 143)); then
        for f in "$state"/logs/*.log; do
            [[ -s "$f" && "$f" != */openssl.log ]] || continue
            printf '\n==> %s (last lines) <==\n' "$f" >&2
            tail -n 15 "$f" >&2
        done
    fi
    stop_processes "$state" 10 || true
    log "logs are kept in $state/logs; remove the directory with down.sh"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- ports ---------------------------------------------------------------------------

taken_ports=" "
# pick_port: sets $port to a random port of 127.0.0.1 that nothing listens on,
# below the usual ephemeral range. Another process could still take it before
# ours binds; startup then fails cleanly and can simply be retried.
pick_port() {
    local p tries
    for ((tries = 0; tries < 500; tries++)); do
        p=$((20000 + RANDOM % 12000))
        [[ "$taken_ports" != *" $p "* ]] || continue
        if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            continue
        fi
        taken_ports+="$p "
        port=$p
        return 0
    done
    die "found no free port"
}
pick_port; etcd_port=$port
pick_port; etcd_peer_port=$port
pick_port; apiserver_port=$port
pick_port; controller_manager_port=$port
pick_port; scheduler_port=$port
apiserver_url="https://127.0.0.1:$apiserver_port"

# --- certificates and keys -------------------------------------------------------------

pki=$state/pki
openssl_log=$state/logs/openssl.log
cat >"$pki/openssl.cnf" <<EOF
[req]
distinguished_name = dn
[dn]
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign, digitalSignature
subjectKeyIdentifier = hash
[apiserver]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, IP:$SERVICE_IP, DNS:localhost, DNS:kubernetes, DNS:kubernetes.default, DNS:kubernetes.default.svc, DNS:kubernetes.default.svc.cluster.local
[serving]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
EOF

new_ec_key() {
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>>"$openssl_log"
}

# new_ca NAME: a self-signed CA certificate and its key.
new_ca() {
    new_ec_key "$pki/$1.key"
    openssl req -new -x509 -config "$pki/openssl.cnf" -extensions ca -key "$pki/$1.key" \
        -subj "/CN=$CLUSTER_NAME-$1" -days 365 -out "$pki/$1.crt" 2>>"$openssl_log"
}

# issue NAME SUBJECT SECTION [CA]: a key and a certificate signed by CA
# (default: ca), with the extensions of SECTION in openssl.cnf.
issue() {
    local name=$1 subject=$2 section=$3 ca=${4:-ca}
    new_ec_key "$pki/$name.key"
    openssl req -new -config "$pki/openssl.cnf" -key "$pki/$name.key" \
        -subj "$subject" -out "$pki/$name.csr" 2>>"$openssl_log"
    openssl x509 -req -in "$pki/$name.csr" -CA "$pki/$ca.crt" -CAkey "$pki/$ca.key" \
        -set_serial "0x$(openssl rand -hex 16)" -days 365 \
        -extfile "$pki/openssl.cnf" -extensions "$section" \
        -out "$pki/$name.crt" 2>>"$openssl_log"
    rm -f "$pki/$name.csr"
}

new_ca ca
# The front proxy CA signs the certificate the apiserver shows to aggregated
# API servers; every component trusts it for requestheader authentication,
# which also keeps their logs free of "missing content for CA bundle".
new_ca front-proxy-ca
issue apiserver "/CN=kube-apiserver" apiserver
issue front-proxy-client "/CN=front-proxy-client" client front-proxy-ca
issue serving "/CN=$CLUSTER_NAME-components" serving
issue admin "/O=system:masters/CN=$CLUSTER_NAME-admin" client
issue controller-manager "/CN=system:kube-controller-manager" client
issue scheduler "/CN=system:kube-scheduler" client
# How the apiserver authenticates to kubelets (logs, exec) of real nodes (node-up.sh).
issue apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" client
# Service account tokens are signed with RSA, as in most clusters (RS256).
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$pki/sa.key" 2>>"$openssl_log"
openssl pkey -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>>"$openssl_log"
chmod 600 "$pki"/*.key

# write_kubeconfig FILE CERT_NAME: a kubeconfig for the client certificate
# CERT_NAME, with everything embedded so the file can be copied elsewhere.
write_kubeconfig() {
    cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: $CLUSTER_NAME
  cluster:
    server: $apiserver_url
    certificate-authority-data: $(base64 -w0 "$pki/ca.crt")
users:
- name: $2
  user:
    client-certificate-data: $(base64 -w0 "$pki/$2.crt")
    client-key-data: $(base64 -w0 "$pki/$2.key")
contexts:
- name: $CLUSTER_NAME
  context:
    cluster: $CLUSTER_NAME
    user: $2
current-context: $CLUSTER_NAME
EOF
    chmod 600 "$1"
}
write_kubeconfig "$state/kubeconfig" admin
write_kubeconfig "$pki/controller-manager.kubeconfig" controller-manager
write_kubeconfig "$pki/scheduler.kubeconfig" scheduler

# --- processes ----------------------------------------------------------------------------


https_ok() {
    curl -fsS --max-time 5 --cacert "$pki/ca.crt" "$@"
}

kubectl() {
    "$bin_dir/kubectl" --kubeconfig="$state/kubeconfig" "$@"
}

log "starting etcd on 127.0.0.1:$etcd_port"
start etcd "$bin_dir/etcd" \
    --name="$CLUSTER_NAME" \
    --data-dir="$state/etcd" \
    --listen-client-urls="http://127.0.0.1:$etcd_port" \
    --advertise-client-urls="http://127.0.0.1:$etcd_port" \
    --listen-peer-urls="http://127.0.0.1:$etcd_peer_port" \
    --initial-advertise-peer-urls="http://127.0.0.1:$etcd_peer_port" \
    --initial-cluster="$CLUSTER_NAME=http://127.0.0.1:$etcd_peer_port" \
    --initial-cluster-state=new \
    --unsafe-no-fsync=true \
    --log-level=warn
wait_until "etcd to be healthy" 30 etcd \
    curl -fsS --max-time 5 "http://127.0.0.1:$etcd_port/health"

log "starting kube-apiserver on $apiserver_url"
start kube-apiserver "$bin_dir/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$etcd_port" \
    --bind-address=127.0.0.1 \
    --secure-port="$apiserver_port" \
    --advertise-address=127.0.0.1 \
    --endpoint-reconciler-type=none \
    --cert-dir="$state/kube-apiserver" \
    --tls-cert-file="$pki/apiserver.crt" \
    --tls-private-key-file="$pki/apiserver.key" \
    --client-ca-file="$pki/ca.crt" \
    --kubelet-client-certificate="$pki/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$pki/apiserver-kubelet-client.key" \
    --kubelet-preferred-address-types=InternalIP \
    --requestheader-client-ca-file="$pki/front-proxy-ca.crt" \
    --requestheader-allowed-names=front-proxy-client \
    --requestheader-username-headers=X-Remote-User \
    --requestheader-uid-headers=X-Remote-Uid \
    --requestheader-group-headers=X-Remote-Group \
    --requestheader-extra-headers-prefix=X-Remote-Extra- \
    --proxy-client-cert-file="$pki/front-proxy-client.crt" \
    --proxy-client-key-file="$pki/front-proxy-client.key" \
    --authorization-mode=Node,RBAC \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$pki/sa.pub" \
    --service-account-signing-key-file="$pki/sa.key" \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --allow-privileged=true \
    --profiling=false \
    --v=1
wait_until "kube-apiserver to be ready" 120 kube-apiserver \
    https_ok --cert "$pki/admin.crt" --key "$pki/admin.key" "$apiserver_url/readyz"

log "starting kube-controller-manager, kube-scheduler and kwok"
start kube-controller-manager "$bin_dir/kube-controller-manager" \
    --kubeconfig="$pki/controller-manager.kubeconfig" \
    --authentication-kubeconfig="$pki/controller-manager.kubeconfig" \
    --authorization-kubeconfig="$pki/controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 \
    --secure-port="$controller_manager_port" \
    --tls-cert-file="$pki/serving.crt" \
    --tls-private-key-file="$pki/serving.key" \
    --client-ca-file="$pki/ca.crt" \
    --controllers='*' \
    --use-service-account-credentials=true \
    --service-account-private-key-file="$pki/sa.key" \
    --root-ca-file="$pki/ca.crt" \
    --cluster-signing-cert-file="$pki/ca.crt" \
    --cluster-signing-key-file="$pki/ca.key" \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --cluster-name="$CLUSTER_NAME" \
    --node-monitor-grace-period=30s \
    --leader-elect=false \
    --profiling=false \
    --v=1
start kube-scheduler "$bin_dir/kube-scheduler" \
    --kubeconfig="$pki/scheduler.kubeconfig" \
    --authentication-kubeconfig="$pki/scheduler.kubeconfig" \
    --authorization-kubeconfig="$pki/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 \
    --secure-port="$scheduler_port" \
    --tls-cert-file="$pki/serving.crt" \
    --tls-private-key-file="$pki/serving.key" \
    --client-ca-file="$pki/ca.crt" \
    --leader-elect=false \
    --profiling=false \
    --v=1
# kwok would also read ~/.kwok/kwok.yaml; its own HOME keeps a developer's
# kwok configuration out of the tests.
cp "$script_dir/kwok-stages.yaml" "$state/kwok/stages.yaml"
start kwok env HOME="$state/kwok" "$bin_dir/kwok" \
    --kubeconfig="$state/kubeconfig" \
    --config="$state/kwok/stages.yaml" \
    --manage-all-nodes=false \
    --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
    --node-lease-duration-seconds=40 \
    --cidr="$POD_CIDR"

wait_until "kube-controller-manager to be healthy" 60 kube-controller-manager \
    https_ok "https://127.0.0.1:$controller_manager_port/healthz"
wait_until "kube-scheduler to be ready" 60 kube-scheduler \
    https_ok "https://127.0.0.1:$scheduler_port/readyz"

log "registering $node_count kwok nodes"
nodes_yaml=$state/kwok/nodes.yaml
: >"$nodes_yaml"
for ((i = 0; i < node_count; i++)); do
    cat >>"$nodes_yaml" <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    type: kwok
    kubernetes.io/hostname: kwok-node-$i
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
spec:
  podCIDR: 10.244.$i.0/24
  podCIDRs:
  - 10.244.$i.0/24
status:
  capacity: &resources
    cpu: "32"
    memory: 256Gi
    pods: "110"
  allocatable: *resources
  addresses:
  - type: InternalIP
    address: 127.0.0.1
  - type: Hostname
    address: kwok-node-$i
EOF
done
kubectl create -f "$nodes_yaml" >&2

nodes_ready() {
    local out
    out=$(kubectl get nodes -l type=kwok -o \
        'jsonpath={range .items[*]}{.metadata.name} {.status.conditions[?(@.type=="Ready")].status} {.spec.taints}{"\n"}{end}')
    # Every node listed, Ready, and without taints.
    [[ $(grep -c ' True $' <<<"$out") -eq $node_count ]]
}
wait_until "kwok nodes to be Ready and untainted" 90 kwok nodes_ready
wait_until "the default ServiceAccount" 60 kube-controller-manager \
    kubectl -n default get serviceaccount default

cat >"$state/env" <<EOF
# Written by tests/cluster/up.sh; source it to reach this test cluster.
KUBECONFIG=$state/kubeconfig
MAINSTAY_CLUSTER_BIN=$bin_dir
MAINSTAY_CLUSTER_APISERVER=$apiserver_url
MAINSTAY_CLUSTER_ETCD=http://127.0.0.1:$etcd_port
MAINSTAY_CLUSTER_NODES=$node_count
EOF

finished=1
log "control plane up in ${SECONDS}s: $apiserver_url, $node_count kwok nodes, binaries in $bin_dir"
log "to use it:  export KUBECONFIG=$state/kubeconfig"
log "to stop it: $script_dir/down.sh $state"
