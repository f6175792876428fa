#!/usr/bin/env bash
# tests/cluster/smoke.sh: checks the test control plane end to end. It starts
# a cluster with up.sh in a temporary directory, then checks that
#   - a Deployment's two pods are scheduled on kwok nodes, Running and Ready;
#   - a deleted pod is replaced by its ReplicaSet;
#   - a Job completes;
#   - a ServiceAccount token can be created, authenticates as that account,
#     and is refused by RBAC until a RoleBinding grants access;
# and stops it with down.sh, checking no process of it is left.
#
#   tests/cluster/smoke.sh
set -euo pipefail

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
log() { printf 'smoke.sh: %s\n' "$*" >&2; }
fail() { log "FAILED: $*"; exit 1; }

state=$(mktemp -d "${TMPDIR:-/tmp}/mainstay-cluster-smoke.XXXXXX")
cleanup() { "$script_dir/down.sh" "$state" >/dev/null 2>&1 || true; }
trap cleanup EXIT

"$script_dir/up.sh" "$state"
bin_dir=$("$script_dir/build.sh")
export KUBECONFIG=$state/kubeconfig
kubectl() { "$bin_dir/kubectl" "$@"; }

log "deployment: two pods Running and Ready on kwok nodes"
kubectl create deployment nginx --image=nginx --replicas=2 >/dev/null
kubectl rollout status deployment/nginx --timeout=60s >/dev/null
kubectl wait --for=condition=Ready pod -l app=nginx --timeout=30s >/dev/null
pods=$(kubectl get pods -l app=nginx -o \
    'jsonpath={range .items[*]}{.metadata.name} {.status.phase} {.spec.nodeName}{"\n"}{end}')
[[ $(grep -c ' Running kwok-node-' <<<"$pods") -eq 2 ]] || fail "pods: $pods"

log "replicaset: a deleted pod is replaced"
victim=$(head -n1 <<<"$pods" | cut -d' ' -f1)
kubectl delete pod "$victim" --wait=true >/dev/null
kubectl rollout status deployment/nginx --timeout=60s >/dev/null
kubectl wait --for=condition=Ready pod -l app=nginx --timeout=30s >/dev/null
names=$(kubectl get pods -l app=nginx -o 'jsonpath={.items[*].metadata.name}')
[[ $(wc -w <<<"$names") -eq 2 && " $names " != *" $victim "* ]] ||
    fail "after deleting $victim the pods are: $names"

log "job: completes"
kubectl create job smoke --image=busybox -- true >/dev/null
kubectl wait --for=condition=Complete job/smoke --timeout=60s >/dev/null

log "service account token: authenticates, and RBAC decides"
token=$(kubectl create token default)
# A kubeconfig without the admin's client certificate, which would win over
# the token.
as_sa() {
    kubectl --kubeconfig=/dev/null --server="$(kubectl config view -o 'jsonpath={.clusters[0].cluster.server}')" \
        --certificate-authority="$state/pki/ca.crt" --token="$token" "$@"
}
who=$(as_sa auth whoami -o 'jsonpath={.status.userInfo.username}')
[[ "$who" == system:serviceaccount:default:default ]] || fail "token authenticates as '$who'"
answer=$(as_sa auth can-i list pods || true)
[[ "$answer" == no ]] || fail "before the RoleBinding, can-i list pods said '$answer'"
kubectl create rolebinding smoke-view --clusterrole=view --serviceaccount=default:default >/dev/null
# The authorizer sees the new binding through a watch: give it a moment.
for ((i = 0; i < 50; i++)); do
    answer=$(as_sa auth can-i list pods || true)
    [[ "$answer" != yes ]] || break
    sleep 0.2
done
[[ "$answer" == yes ]] || fail "after the RoleBinding, can-i list pods said '$answer'"

log "down: no process left"
"$script_dir/down.sh" "$state"
if left=$(pgrep -af -- "$state/"); then
    fail "still running after down.sh: $left"
fi
[[ ! -e "$state" ]] || fail "$state still exists"
log "all checks passed"
