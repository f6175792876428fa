#!/usr/bin/env bash
# What the operator costs with many objects: APPS DurableApps spread over DATABASES system
# databases (several apps per database), SCHEDULES Schedules and RUNS WorkflowRuns, on a running
# test control plane (kwok: no pod runs, every app has fixed zero workers).
#
#   bash bench/operator/scale.sh KUBECONFIG DATABASE_URL [APPS] [DATABASES] [SCHEDULES] [RUNS] [WINDOW]
#
# Defaults: 200 apps on 10 databases, 1,000 Schedules, 10,000 WorkflowRuns, a 60 s window.
# KUBECONFIG: an admin kubeconfig of a control plane with the CRDs installed (tests/cluster/up.sh
# gives one); DATABASE_URL: a Postgres superuser URL (databases bench_scale_N are created). Needs
# target/debug/mainstay-operator and target/debug/mainstay (cargo build -p mainstay-operator -p
# mainstay-cli).
#
# Printed, from the operator's own counters (mainstay_operator_api_requests_total,
# mainstay_operator_reconciles_total), its RSS and pg_stat_database:
#   - under change: while every object is created and the operator brings them to their first
#     status (each run enqueued), the requests, writes, reconciles and transactions per second;
#   - at rest: the same over WINDOW seconds once everything has settled;
#   - enqueue to scale-up: the first app of each database is autoscaled (0 to 1 workers) and has
#     no runs; one workflow is enqueued for its version, and the time until its Deployment asks
#     for a worker is measured, once per such app.
set -euo pipefail
kubeconfig=$1 url=$2 apps=${3:-200} dbs=${4:-10} schedules=${5:-1000} runs=${6:-10000} window=${7:-60}
export KUBECONFIG=$kubeconfig
here=$(cd "$(dirname "$0")/../.." && pwd)
ns=bench-scale
work=$(mktemp -d)
port=18089
db_of() { echo $(( ($1 - 1) % dbs + 1 )); }
# The first app of each database is its probe; the others carry the Schedules and runs.
is_probe() { [[ $1 -le $dbs ]]; }
carrier() { echo $(( dbs + 1 + ($1 - 1) % (apps - dbs) )); }

kubectl apply --server-side -f "$here/charts/mainstay/crds/" >/dev/null
kubectl delete namespace "$ns" --ignore-not-found --wait=true >/dev/null
kubectl create namespace "$ns" >/dev/null
for d in $(seq 1 "$dbs"); do
  psql "$url" -qc "DROP DATABASE IF EXISTS bench_scale_$d WITH (FORCE)" -c "CREATE DATABASE bench_scale_$d" >/dev/null
  kubectl -n "$ns" create secret generic "db-$d" --from-literal=url="${url%/*}/bench_scale_$d" >/dev/null
done
for i in $(seq 1 "$apps"); do
  if is_probe "$i"; then
    scaling='scaling: {minReplicas: 0, maxReplicas: 1}'
  else
    scaling='replicas: 0'
  fi
  printf -- '---\napiVersion: mainstay.dev/v1alpha1\nkind: DurableApp\nmetadata: {name: app-%s, namespace: %s}\nspec: {image: "example.invalid/worker:1.0.%s", %s, database: {urlSecret: {name: db-%s}}}\n' \
    "$i" "$ns" "$i" "$scaling" "$(db_of "$i")"
done >"$work/apps.yaml"
for k in $(seq 1 "$schedules"); do
  printf -- '---\napiVersion: mainstay.dev/v1alpha1\nkind: Schedule\nmetadata: {name: sched-%s, namespace: %s}\nspec: {appRef: app-%s, workflowName: report, schedule: "0 0 1 1 *"}\n' \
    "$k" "$ns" "$(carrier "$k")"
done >"$work/schedules.yaml"
# Runs in files of 500, created in parallel (kubectl creates a file's objects one by one).
for k in $(seq 1 "$runs"); do
  printf -- '---\napiVersion: mainstay.dev/v1alpha1\nkind: WorkflowRun\nmetadata: {name: run-%s, namespace: %s}\nspec: {appRef: app-%s, workflowName: report, input: %s}\n' \
    "$k" "$ns" "$(carrier "$k")" "$k" >>"$work/runs-$(( (k - 1) / 500 )).yaml"
done

"$here/target/debug/mainstay-operator" --leader-elect=false --metrics-addr=127.0.0.1:$port --namespace "$ns" >"$work/operator.log" 2>&1 &
op=$!
trap 'kill $op 2>/dev/null; wait $op 2>/dev/null || true' EXIT
metric() { curl -s "127.0.0.1:$port/metrics" | awk -v m="^$1" -v x="${2:-^$}" '$0 ~ m && !($0 ~ x) {split($0, a, " "); s += a[2]} END {print s+0}'; }
requests() { metric mainstay_operator_api_requests_total; }
writes() { metric mainstay_operator_api_requests_total 'verb="(get|list|watch)"'; }
# Reads other than the watches' own (re-)establishment, which kube renews every few minutes.
reads() { metric mainstay_operator_api_requests_total 'verb="(watch|apply|create|patch|update|delete)"'; }
reconciles() { metric mainstay_operator_reconciles_total; }
xacts() { psql "$url" -Atc "SELECT sum(xact_commit + xact_rollback) FROM pg_stat_database WHERE datname LIKE 'bench_scale_%'"; }
rss_mb() { awk '/VmRSS/ {printf "%.0f", $2 / 1024}' /proc/$op/status; }
until curl -s "127.0.0.1:$port/metrics" >/dev/null; do sleep 0.2; done
sample() { echo "$(requests) $(writes) $(reconciles) $(xacts) $(reads) $(date +%s.%N)"; }
rates() { # two samples → per-second figures
  read -r r0 w0 c0 x0 g0 t0 <<<"$1"; read -r r1 w1 c1 x1 g1 t1 <<<"$2"
  awk -v r=$((r1 - r0)) -v w=$((w1 - w0)) -v c=$((c1 - c0)) -v x=$((x1 - x0)) -v g=$((g1 - g0)) -v t0="$t0" -v t1="$t1" \
    'BEGIN {t = t1 - t0; printf "%.0fs: api_requests %d (%.1f/s; of them get/list %d, the rest watches and writes), api_writes %d (%.1f/s), reconciles %.1f/s, db_transactions %.1f/s", t, r, r / t, g, w, w / t, c / t, x / t}'
}

begin=$(sample)
kubectl create -f "$work/apps.yaml" >/dev/null
kubectl create -f "$work/schedules.yaml" >/dev/null
ls "$work"/runs-*.yaml | xargs -P 4 -I{} kubectl create -f {} >/dev/null
echo "created $apps apps, $schedules schedules, $runs runs in $(awk -v a="${begin##* }" -v b="$(date +%s.%N)" 'BEGIN {printf "%.0f", b - a}')s; waiting for the operator to settle..."
peak=0
while :; do
  enqueued=$(kubectl -n "$ns" get workflowruns --no-headers -o custom-columns=P:.status.phase | grep -c Enqueued || true)
  settled_apps=$(kubectl -n "$ns" get durableapps --no-headers -o custom-columns=G:.status.observedGeneration | grep -c '^[0-9]' || true)
  settled_schedules=$(kubectl -n "$ns" get schedules --no-headers -o custom-columns=N:.status.nextScheduleTime | grep -c '^[0-9]' || true)
  rss=$(rss_mb); (( rss > peak )) && peak=$rss
  [[ $enqueued -ge $runs && $settled_apps -ge $apps && $settled_schedules -ge $schedules ]] && break
  sleep 2
done
settled=$(sample)
echo "under change (creation to settled): $(rates "$begin" "$settled"), peak rss ${peak} MB"
sleep 10
a=$(sample)
sleep "$window"
b=$(sample)
echo "at rest: $(rates "$a" "$b"), rss $(rss_mb) MB"
curl -s "127.0.0.1:$port/metrics" | grep '^mainstay_operator_api_requests_total' | sort >"$work/requests.txt"

# Enqueue to scale-up, once per probe app (a version of its own, so the work is its alone).
replicas() { kubectl -n "$ns" get deployments -l "mainstay.dev/app=app-$1" -o jsonpath='{.items[0].spec.replicas}' 2>/dev/null; }
samples=()
for p in $(seq 1 "$dbs"); do
  [[ "$(replicas "$p")" == 0 ]] || { echo "probe app-$p is not at zero workers: $(replicas "$p")"; exit 1; }
  # At a random moment of the operator's poll interval, not just after its last look.
  sleep "$(awk -v r=$RANDOM 'BEGIN {printf "%.2f", r / 32768 * 2}')"
  start_ns=$(date +%s%N)
  "$here/target/debug/mainstay" workflow start probe_work --app-version "1.0.$p" --database-url "${url%/*}/bench_scale_$p" >/dev/null
  took=""
  for _ in $(seq 1 600); do
    [[ "$(replicas "$p")" == 1 ]] && { took=$(( ($(date +%s%N) - start_ns) / 1000000 )); break; }
    sleep 0.05
  done
  samples+=("${took:-never}")
done
echo "enqueue to scale-up (ms, one per probe app): ${samples[*]}"
echo "rss after: $(rss_mb) MB; operator log and request counts in $work"
