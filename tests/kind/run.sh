#!/usr/bin/env bash
# tests/kind/run.sh: the end-to-end check on a real kind cluster, for machines with Docker.
# (The CI machines have no Docker engine; there `bash .ci/run` uses tests/cluster/ instead.)
#
# Builds the operator and example worker images, creates a kind cluster, loads the images,
# installs the chart, starts a Postgres in the cluster, applies examples/kubernetes, and checks
# the outcomes: Migrated, a worker pod that is Ready against its real health probes, 200 orders
# enqueued and processed (scale up and back to zero), a Schedule firing every minute, and
# `helm uninstall` leaving the database intact. Deletes the cluster at the end unless KEEP=1.
#
# Needs: docker, kind, kubectl, helm.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cluster=${KIND_CLUSTER:-mainstay}
log() { printf '==> %s\n' "$*" >&2; }
for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null || { echo "$tool is required" >&2; exit 1; }
done

cleanup() { [ "${KEEP:-0}" = 1 ] || kind delete cluster --name "$cluster" >/dev/null 2>&1 || true; }
trap cleanup EXIT

log "building images"
docker build -q -f "$repo/tests/kind/operator.Dockerfile" -t mainstay-operator:dev "$repo" >/dev/null
docker build -q -f "$repo/tests/kind/worker.Dockerfile" -t mainstay-example-worker:dev "$repo" >/dev/null

log "creating kind cluster $cluster"
kind create cluster --name "$cluster" --wait 120s
kind load docker-image --name "$cluster" mainstay-operator:dev mainstay-example-worker:dev

log "installing the chart"
helm install mainstay "$repo/charts/mainstay" -n mainstay-system --create-namespace \
  --set image.repository=mainstay-operator --set image.tag=dev --set image.pullPolicy=Never --wait
helm test mainstay -n mainstay-system

log "starting Postgres"
kubectl apply -f "$repo/tests/kind/postgres.yaml"
kubectl rollout status deploy/postgres --timeout=180s

log "applying the example"
kubectl apply -f "$repo/examples/kubernetes/secret/database-secret.yaml"
sed -e 's|registry.example.com/mainstay-example-worker:0.1.0|mainstay-example-worker:dev|' \
    -e 's|^spec:|spec:\n  imagePullPolicy: Never|' "$repo/examples/kubernetes/durable-app.yaml" | kubectl apply -f -
sed -e 's|"30 2 \* \* \*"|"* * * * *"|' "$repo/examples/kubernetes/schedule.yaml" | kubectl apply -f -
kubectl wait durableapp/shop --for=condition=Migrated --timeout=180s

log "enqueueing 200 orders"
kubectl run enqueue --rm -i --restart=Never --image=postgres:17 --env=PGPASSWORD=postgres -- \
  psql -h postgres -U postgres -d shop -v ON_ERROR_STOP=1 -c "
    INSERT INTO dbos.workflow_status (workflow_uuid, status, name, queue_name, serialization)
    SELECT 'kind-order-' || i, 'ENQUEUED', 'process_order', 'orders', 'portable_json'
    FROM generate_series(1, 200) AS i;
    INSERT INTO dbos.workflow_input (workflow_uuid, inputs)
    SELECT 'kind-order-' || i, '{\"positionalArgs\": [' || i || '], \"namedArgs\": {}}'
    FROM generate_series(1, 200) AS i;"
kubectl wait durableapp/shop --for=jsonpath='{.status.desiredWorkers}'=2 --timeout=120s
kubectl wait durableapp/shop --for=condition=Ready --timeout=300s

count() {
  kubectl run "count-$RANDOM" --rm -i --restart=Never --image=postgres:17 --env=PGPASSWORD=postgres -- \
    psql -h postgres -U postgres -d shop -tA -c "$1" 2>/dev/null | head -n1
}
log "waiting for the orders to finish"
for _ in $(seq 1 60); do
  done_count=$(count "SELECT count(*) FROM dbos.workflow_status WHERE workflow_uuid LIKE 'kind-order-%' AND status = 'SUCCESS'")
  [ "$done_count" = 200 ] && break
  sleep 5
done
[ "$done_count" = 200 ] || { echo "only $done_count of 200 orders succeeded" >&2; exit 1; }
kubectl wait durableapp/shop --for=jsonpath='{.status.desiredWorkers}'=0 --timeout=180s

log "waiting for a scheduled run"
kubectl wait schedule/nightly-report --for=jsonpath='{.status.lastSuccessfulTime}' --timeout=180s
kubectl get durableapps,schedules

log "uninstalling"
helm uninstall mainstay -n mainstay-system --wait
left=$(count "SELECT count(*) FROM dbos.workflow_status")
[ "${left:-0}" -ge 200 ] || { echo "the database lost workflows after helm uninstall ($left)" >&2; exit 1; }
log "kind check passed"
