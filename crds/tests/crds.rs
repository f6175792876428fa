//! The committed CRD YAML matches the Rust types, example resources parse with their defaults,
//! and the schema reads well in `kubectl explain`, `kubectl get` and `kubectl apply`.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use mainstay_crds::{ConcurrencyPolicy, DurableApp, Schedule};
use serde_json::Value;

#[test]
fn committed_crd_yaml_matches_the_types() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for (file, crd) in mainstay_crds::crds() {
        let path = root.join(mainstay_crds::CHART_CRD_DIR).join(file);
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == mainstay_crds::render(&crd),
            "{} is out of date with the Rust types in crds/; regenerate it with \
             `cargo run -p mainstay-crds --bin mainstay-crdgen` from the repository root",
            path.display()
        );
    }
}

#[test]
fn a_minimal_durable_app_gets_its_defaults() {
    let app: DurableApp = yaml_serde::from_str(
        r#"
apiVersion: mainstay.dev/v1alpha1
kind: DurableApp
metadata: {name: shop, namespace: default}
spec:
  image: registry.example.com/shop-worker:1.4.2
  database:
    urlSecret: {name: shop-db}
  queues:
    - name: orders
      concurrency: 10
      workerConcurrency: 2
"#,
    )
    .unwrap();
    assert_eq!(app.spec.database.url_secret.key, "url");
    assert_eq!(app.spec.replicas, None);
    assert_eq!((app.spec.scaling.min_replicas, app.spec.scaling.max_replicas), (0, 10));
    assert_eq!(app.spec.queues[0].worker_concurrency, Some(2));
}

#[test]
fn a_schedule_defaults_to_allowing_overlap() {
    let s: Schedule = yaml_serde::from_str(
        r#"
apiVersion: mainstay.dev/v1alpha1
kind: Schedule
metadata: {name: nightly, namespace: default}
spec:
  appRef: shop
  workflowName: nightly_report
  schedule: "0 3 * * *"
  timeZone: Europe/Paris
  input: [{"full": true}]
"#,
    )
    .unwrap();
    assert_eq!(s.spec.concurrency_policy, ConcurrencyPolicy::Allow);
    assert!(!s.spec.suspend);
    assert_eq!(s.spec.input, Some(serde_json::json!([{"full": true}])));
}

// What `kubectl explain`, `kubectl get` and `kubectl apply` make of the generated CRDs. No
// apiserver here: these read the openAPIV3Schema and the printer columns the apiserver would.

/// The root schema of each CRD, by kind.
fn schemas() -> Vec<(String, Value)> {
    mainstay_crds::crds()
        .into_iter()
        .map(|(_, crd)| {
            let schema = crd.spec.versions[0].schema.as_ref().and_then(|s| s.open_api_v3_schema.as_ref());
            (crd.spec.names.kind.clone(), serde_json::to_value(schema.expect("a schema")).unwrap())
        })
        .collect()
}

/// Calls `f(path, schema, inside_a_list)` for every schema below `schema`: properties
/// (`.name`), list items (`[]`) and map values (`{}`).
fn walk(schema: &Value, path: &str, in_list: bool, f: &mut dyn FnMut(&str, &Value, bool)) {
    f(path, schema, in_list);
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (name, s) in props {
            walk(s, &format!("{path}.{name}"), in_list, f);
        }
    }
    if let Some(items) = schema.get("items") {
        walk(items, &format!("{path}[]"), true, f);
    }
    if let Some(values) = schema.get("additionalProperties").filter(|v| v.is_object()) {
        walk(values, &format!("{path}{{}}"), in_list, f);
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        for (i, s) in schema.get(key).and_then(Value::as_array).into_iter().flatten().enumerate() {
            walk(s, &format!("{path}<{key}{i}>"), in_list, f);
        }
    }
}

/// Properties are the fields `kubectl explain` lists (not list items or map values).
fn is_property(path: &str) -> bool {
    !path.ends_with("[]") && !path.ends_with('}') && !path.ends_with('>') && !path.is_empty()
}

/// A default inside a list item is applied by the apiserver to every element, so the stored
/// list never equals the applied one and `kubectl apply` reports `configured` every time.
#[test]
fn list_items_have_no_schema_defaults() {
    let mut bad = Vec::new();
    for (kind, schema) in schemas() {
        walk(&schema, "", false, &mut |path, s, in_list| {
            if in_list && s.get("default").is_some() {
                bad.push(format!("{kind}{path}"));
            }
        });
    }
    assert!(bad.is_empty(), "schema defaults inside lists (state them in the description instead): {bad:?}");
}

#[test]
fn every_field_has_a_description_and_states_its_default() {
    let mut undescribed = Vec::new();
    let mut unstated = Vec::new();
    for (kind, schema) in schemas() {
        walk(&schema, "", false, &mut |path, s, _| {
            let description = s.get("description").and_then(Value::as_str).unwrap_or_default();
            if is_property(path) && description.trim().is_empty() {
                undescribed.push(format!("{kind}{path}"));
            }
            if s.get("default").is_some() && !description.contains("Default:") {
                unstated.push(format!("{kind}{path}"));
            }
        });
    }
    assert!(undescribed.is_empty(), "fields without a description: {undescribed:?}");
    assert!(unstated.is_empty(), "defaults not stated (\"Default: …\") in the description: {unstated:?}");
}

#[test]
fn each_kind_has_a_real_top_level_description() {
    for (kind, schema) in schemas() {
        let description = schema.get("description").and_then(Value::as_str).unwrap_or_default();
        assert!(
            !description.is_empty() && !description.contains("Auto-generated") && !description.contains("CustomResource"),
            "{kind}: top-level description is boilerplate: {description:?}"
        );
    }
}

#[test]
fn no_enum_contains_null() {
    let mut bad = Vec::new();
    for (kind, schema) in schemas() {
        walk(&schema, "", false, &mut |path, s, _| {
            if s.get("enum").and_then(Value::as_array).is_some_and(|e| e.contains(&Value::Null)) {
                bad.push(format!("{kind}{path}"));
            }
        });
    }
    assert!(bad.is_empty(), "enums containing null: {bad:?}");
}

fn printer_columns(crd: &CustomResourceDefinition) -> Vec<(String, String, String)> {
    crd.spec.versions[0]
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| (c.name.clone(), c.type_.clone(), c.json_path.clone()))
        .collect()
}

fn columns(spec: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
    spec.iter().map(|(n, t, p)| (n.to_string(), t.to_string(), p.to_string())).collect()
}

/// `kubectl get` tells a broken app from a healthy one scaled to zero (the Ready condition and
/// its reason), and shows a future time as text: a `date` column renders it as `<invalid>`.
#[test]
fn printer_columns_show_the_ready_condition_and_its_reason() {
    const READY: &str = r#".status.conditions[?(@.type=="Ready")].status"#;
    const REASON: &str = r#".status.conditions[?(@.type=="Ready")].reason"#;
    assert_eq!(
        printer_columns(&DurableApp::crd()),
        columns(&[
            ("Ready", "string", READY),
            ("Reason", "string", REASON),
            ("Workers", "integer", ".status.readyWorkers"),
            ("Desired", "integer", ".status.desiredWorkers"),
            ("Queued", "integer", ".status.queuedWorkflows"),
            ("Version", "string", ".status.currentVersion"),
            ("Age", "date", ".metadata.creationTimestamp"),
        ])
    );
    assert_eq!(
        printer_columns(&Schedule::crd()),
        columns(&[
            ("Ready", "string", READY),
            ("Reason", "string", REASON),
            ("Schedule", "string", ".spec.schedule"),
            ("TZ", "string", ".spec.timeZone"),
            ("Suspend", "boolean", ".spec.suspend"),
            ("Last", "date", ".status.lastScheduleTime"),
            ("Next", "string", ".status.nextScheduleTime"),
            ("Age", "date", ".metadata.creationTimestamp"),
        ])
    );
}

/// Fields whose schema default went away still read as their defaults.
#[test]
fn absent_list_item_fields_still_read_as_their_defaults() {
    let app: DurableApp = yaml_serde::from_str(
        r#"
apiVersion: mainstay.dev/v1alpha1
kind: DurableApp
metadata: {name: shop}
spec:
  image: shop:1
  database: {urlSecret: {name: db}}
  queues: [{name: orders}]
status:
  conditions: [{type: Ready, status: "True", reason: Available}]
"#,
    )
    .unwrap();
    assert!(!app.spec.queues[0].priority_enabled);
    assert!(app.spec.queues[0].partitions.is_none());
    assert_eq!(app.status.unwrap().conditions[0].message, "");
}
