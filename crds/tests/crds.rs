//! The committed CRD YAML matches the Rust types, and example resources parse with their
//! defaults.

use mainstay_crds::{ConcurrencyPolicy, DurableApp, Schedule};

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
    let app: DurableApp = serde_yaml::from_str(
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
    let s: Schedule = serde_yaml::from_str(
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
