#!/usr/bin/env bash
# What an idle operator costs the API server: N DurableApps (scaled to zero, several per
# database), N Schedules and N WorkflowRuns on a running test control plane; once they have
# settled, the operator's own request counter (mainstay_operator_api_requests_total) is read
# twice, WINDOW seconds apart. Then the time from an enqueue on an app at zero workers to its
# Deployment asking for a worker.
#
#   bash bench/operator/idle.sh KUBECONFIG DATABASE_URL [APPS] [WINDOW]
#
# KUBECONFIG: an admin kubeconfig of a control plane with the CRDs installed (tests/cluster/up.sh
# gives one); DATABASE_URL: a Postgres superuser URL (a database `bench_idle` is created).
set -euo pipefail
kubeconfig=$1 url=$2 apps=${3:-20} window=${4:-60}
export KUBECONFIG=$kubeconfig
here=$(cd "$(dirname "$0")/../.." && pwd)
ns=bench-idle
db_url="${url%/*}/bench_idle"
psql "$url" -qc "DROP DATABASE IF EXISTS bench_idle WITH (FORCE)" -c "CREATE DATABASE bench_idle" >/dev/null
kubectl apply --server-side -f "$here/charts/mainstay/crds/" >/dev/null
kubectl delete namespace "$ns" --ignore-not-found --wait=true >/dev/null
kubectl create namespace "$ns" >/dev/null
kubectl -n "$ns" create secret generic db --from-literal=url="$db_url" >/dev/null
{
  for i in $(seq 1 "$apps"); do
    cat <<YAML
---
apiVersion: mainstay.dev/v1alpha1
kind: DurableApp
metadata: {name: app-$i, namespace: $ns}
spec: {image: "example.invalid/worker:1.0.$i", replicas: 0, database: {urlSecret: {name: db}}}
---
apiVersion: mainstay.dev/v1alpha1
kind: Schedule
metadata: {name: sched-$i, namespace: $ns}
spec: {appRef: app-$i, workflowName: report, schedule: "0 0 1 1 *"}
---
apiVersion: mainstay.dev/v1alpha1
kind: WorkflowRun
metadata: {name: run-$i, namespace: $ns}
spec: {appRef: app-$i, workflowName: report, input: $i}
YAML
  done
} | kubectl apply -f - >/dev/null
# One more app, autoscaled (0 to 1 workers) on a database of its own: the enqueue-to-scale-up
# probe, measured after the idle window (work on the shared database would count for all apps).
psql "$url" -qc "DROP DATABASE IF EXISTS bench_probe WITH (FORCE)" -c "CREATE DATABASE bench_probe" >/dev/null
probe_url="${url%/*}/bench_probe"
kubectl -n "$ns" create secret generic probe-db --from-literal=url="$probe_url" >/dev/null
kubectl apply -f - >/dev/null <<YAML
apiVersion: mainstay.dev/v1alpha1
kind: DurableApp
metadata: {name: probe, namespace: $ns}
spec: {image: "example.invalid/worker:9.9.9", scaling: {minReplicas: 0, maxReplicas: 1}, database: {urlSecret: {name: probe-db}}}
YAML
port=18089
"$here/target/debug/mainstay-operator" --leader-elect=false --metrics-addr=127.0.0.1:$port --namespace "$ns" >/tmp/bench-idle-operator.log 2>&1 &
op=$!
trap 'kill $op 2>/dev/null; wait $op 2>/dev/null || true' EXIT
count() { curl -s "127.0.0.1:$port/metrics" | awk '/^mainstay_operator_api_requests_total/ {split($0, a, " "); s += a[2]} END {print s+0}'; }
reconciles() { curl -s "127.0.0.1:$port/metrics" | awk '/^mainstay_operator_reconciles_total/ {split($0, a, " "); s += a[2]} END {print s+0}'; }
xacts() { psql "$url" -Atc "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = 'bench_idle'"; }
writes() { curl -s "127.0.0.1:$port/metrics" | awk '/^mainstay_operator_api_requests_total/ && !/verb="(get|list|watch)"/ {split($0, a, " "); s += a[2]} END {print s+0}'; }
echo "waiting for $apps apps, schedules and runs to settle..."
for _ in $(seq 1 120); do
  ready=$(kubectl -n "$ns" get durableapps -o jsonpath='{range .items[*]}{.status.observedGeneration}{"\n"}{end}' | grep -c . || true)
  runs=$(kubectl -n "$ns" get workflowruns -o jsonpath='{range .items[*]}{.status.phase}{"\n"}{end}' | grep -c Enqueued || true)
  [[ $ready -ge $((apps + 1)) && $runs -ge $apps ]] && break
  sleep 1
done
sleep 10
r0=$(count) w0=$(writes) c0=$(reconciles) x0=$(xacts) t0=$(date +%s)
sleep "$window"
r1=$(count) w1=$(writes) c1=$(reconciles) x1=$(xacts) t1=$(date +%s)
rss=$(awk '/VmRSS/ {print $2}' /proc/$op/status)
# Enqueue to scale-up: one workflow for the probe app (scaled to zero), then the time until its
# Deployment asks for a worker.
probe_replicas() { kubectl -n "$ns" get deployments -l mainstay.dev/app=probe -o jsonpath='{.items[0].spec.replicas}' 2>/dev/null; }
[[ "$(probe_replicas)" == 0 ]] || { echo "the probe app is not at zero workers: $(probe_replicas)"; exit 1; }
start_ns=$(date +%s%N)
"$here/target/debug/mainstay" workflow start probe_work --database-url "$probe_url" >/dev/null
scaled=""
for _ in $(seq 1 600); do
  [[ "$(probe_replicas)" == 1 ]] && { scaled=$(( ($(date +%s%N) - start_ns) / 1000000 )); break; }
  sleep 0.05
done
per_s() { echo "scale=1; $1 / ($t1 - $t0)" | bc; }
echo "enqueue_to_scale_up=${scaled:-never}ms"
echo "apps=$apps window=$((t1 - t0))s api_requests=$((r1 - r0)) ($(per_s $((r1 - r0)))/s) api_writes=$((w1 - w0)) reconciles/s=$(per_s $((c1 - c0))) db_transactions/s=$(per_s $((x1 - x0))) rss=${rss}kB"
curl -s "127.0.0.1:$port/metrics" | grep '^mainstay_operator_api_requests_total' | sort
