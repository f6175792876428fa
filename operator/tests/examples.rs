//! The manifests in `examples/kubernetes/` are what `kubectl apply -f examples/kubernetes/`
//! applies: each must be a resource of ours that the operator accepts, and none may be a Secret
//! (applying the directory would overwrite the user's database Secret with a placeholder).

use std::path::PathBuf;

use mainstay_crds::{DurableApp, Schedule};
use serde::Deserialize as _;

fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/kubernetes")
}

#[test]
fn applying_the_examples_directory_touches_only_our_resources_and_they_are_valid() {
    let mut seen = 0;
    for entry in std::fs::read_dir(examples_dir()).expect("read examples/kubernetes") {
        let path = entry.expect("a directory entry").path();
        // `kubectl apply -f DIR` (without -R) reads these files of the directory itself.
        let applied = path.is_file() && matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "json"));
        if !applied {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read an example");
        for doc in yaml_serde::Deserializer::from_str(&text) {
            let value = yaml_serde::Value::deserialize(doc).expect("parse an example");
            if value.is_null() {
                continue;
            }
            let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or_default().to_string();
            match kind.as_str() {
                "DurableApp" => {
                    let app: DurableApp = yaml_serde::from_value(value).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                    mainstay_operator::validate::durable_app(&app).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                }
                "WorkflowRun" => {
                    let _: mainstay_crds::WorkflowRun = yaml_serde::from_value(value).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                }
                "Schedule" => {
                    let s: Schedule = yaml_serde::from_value(value).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                    mainstay_operator::validate::schedule(&s).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                }
                other => panic!(
                    "{} holds a {other}: `kubectl apply -f examples/kubernetes/` would apply it (a Secret there overwrites the user's)",
                    path.display()
                ),
            }
            seen += 1;
        }
    }
    assert!(seen >= 3, "the examples directory lost its manifests");
}

/// The runs kept apart in `examples/kubernetes/runs/` (applied one by one, not with the
/// directory) are WorkflowRuns the CRD accepts.
#[test]
fn the_example_runs_are_workflow_runs() {
    let dir = examples_dir().join("runs");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("read examples/kubernetes/runs") {
        let path = entry.expect("a directory entry").path();
        let text = std::fs::read_to_string(&path).expect("read an example");
        let _: mainstay_crds::WorkflowRun = yaml_serde::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        seen += 1;
    }
    assert!(seen >= 2, "the example runs are gone");
}
