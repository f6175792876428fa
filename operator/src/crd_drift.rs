//! Whether the CRDs the API server serves are older than this operator: the fields the
//! operator knows that an installed CRD's schema lacks.
//!
//! Why it matters: the API server prunes every field its schema does not declare. Helm installs
//! CRDs but never upgrades them, so after an upgrade that skipped `kubectl apply --server-side
//! -f charts/mainstay/crds/`, a new spec field the user sets is silently dropped (the operator
//! falls back to its default) and a new status field the operator writes never appears. This
//! module names those fields so the operator can say so; the watch that feeds it is in
//! `stores`.
//!
//! Invariants: pure (no client). A field is missing only when the served schema would prune
//! it: below `x-kubernetes-preserve-unknown-fields` nothing is. Fields the served CRD has and
//! the operator does not know (a newer CRD, an operator rolled back) are no concern of this
//! operator: it neither reads nor writes them.

use std::collections::BTreeMap;
use std::sync::Mutex;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};

/// The paths (`spec.stuck`, `spec.queues[].priority`, `version v1`) of what `built` (the CRD
/// this operator was built with) declares and `served` (the one installed) does not, outermost
/// only: a missing object's own fields are not listed.
pub fn missing_fields(served: &CustomResourceDefinition, built: &CustomResourceDefinition) -> Vec<String> {
    let mut missing = Vec::new();
    for version in &built.spec.versions {
        let Some(served_version) = served.spec.versions.iter().find(|v| v.name == version.name && v.served) else {
            missing.push(format!("version {}", version.name));
            continue;
        };
        let schema = |v: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinitionVersion| {
            v.schema.as_ref().and_then(|s| s.open_api_v3_schema.clone())
        };
        match (schema(served_version), schema(version)) {
            (Some(served), Some(built)) => compare(&served, &built, "", &mut missing),
            // No schema served: a v1 CRD must have one, so this is not a CRD of ours at all.
            (None, Some(_)) => missing.push(format!("the schema of version {}", version.name)),
            (_, None) => {}
        }
    }
    missing
}

fn compare(served: &JSONSchemaProps, built: &JSONSchemaProps, path: &str, missing: &mut Vec<String>) {
    if served.x_kubernetes_preserve_unknown_fields == Some(true) {
        return;
    }
    let join = |name: &str| if path.is_empty() { name.to_string() } else { format!("{path}.{name}") };
    let no_properties = BTreeMap::new();
    let served_properties = served.properties.as_ref().unwrap_or(&no_properties);
    for (name, built_child) in built.properties.iter().flatten() {
        match served_properties.get(name) {
            Some(served_child) => compare(served_child, built_child, &join(name), missing),
            None => missing.push(join(name)),
        }
    }
    if let (Some(JSONSchemaPropsOrArray::Schema(s)), Some(JSONSchemaPropsOrArray::Schema(b))) = (&served.items, &built.items) {
        compare(s, b, &format!("{path}[]"), missing);
    }
    if let (Some(JSONSchemaPropsOrBool::Schema(s)), Some(JSONSchemaPropsOrBool::Schema(b))) =
        (&served.additional_properties, &built.additional_properties)
    {
        compare(s, b, &format!("{path}.*"), missing);
    }
}

/// What is known of each served CRD of ours: its missing fields (empty: current), by CRD name.
/// A CRD not (yet) read, or one the operator may not read, is absent: nothing is claimed
/// about it.
pub struct CrdDrift {
    missing: Mutex<BTreeMap<String, Vec<String>>>,
    /// Bumped on each change, so the objects that report it are reconciled again.
    changes: tokio::sync::watch::Sender<u64>,
}

impl Default for CrdDrift {
    fn default() -> Self {
        CrdDrift { missing: Mutex::default(), changes: tokio::sync::watch::Sender::new(0) }
    }
}

impl CrdDrift {
    /// Records what `crd` lacks; returns what was known before (`None`: nothing) when that
    /// changed, and tells [`CrdDrift::changes`]' subscribers.
    pub fn record(&self, crd: &str, missing: Vec<String>) -> Option<Option<Vec<String>>> {
        let before = {
            let mut known = self.missing.lock().unwrap_or_else(|p| p.into_inner());
            known.insert(crd.to_string(), missing.clone())
        };
        if before.as_ref() == Some(&missing) {
            return None;
        }
        self.changes.send_modify(|n| *n += 1);
        Some(before)
    }

    /// A stream that yields once per change recorded after it was made.
    pub fn changes(&self) -> impl futures::Stream<Item = ()> + Send + 'static {
        futures::stream::unfold(self.changes.subscribe(), |mut rx| async move { rx.changed().await.ok().map(|()| ((), rx)) })
    }

    /// The fields served CRD `crd` lacks (empty when it is current or not known).
    pub fn missing(&self, crd: &str) -> Vec<String> {
        self.missing.lock().unwrap_or_else(|p| p.into_inner()).get(crd).cloned().unwrap_or_default()
    }
}

/// What to tell whoever installed the CRDs.
pub fn outdated_message(crd: &str, missing: &[String]) -> String {
    format!(
        "the installed CRD {crd} is older than this operator: the API server drops {} (a spec field set there \
         falls back to its default; a status field never shows). Apply the CRDs of this release: `kubectl apply \
         --server-side -f charts/mainstay/crds/` (Helm installs CRDs but never upgrades them)",
        missing.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;
    use mainstay_crds::{DurableApp, Schedule, WorkflowRun};

    fn crd(yaml: &str) -> CustomResourceDefinition {
        yaml_serde::from_str(yaml).expect("fixture parses")
    }

    const BUILT: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: things.example.dev}
spec:
  group: example.dev
  names: {kind: Thing, plural: things}
  scope: Namespaced
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              properties:
                size: {type: integer}
                limits:
                  type: object
                  properties:
                    cpu: {type: string}
                    memory: {type: string}
                queues:
                  type: array
                  items:
                    type: object
                    properties:
                      name: {type: string}
                      priority: {type: boolean}
                labels:
                  type: object
                  additionalProperties:
                    type: object
                    properties:
                      value: {type: string}
                      note: {type: string}
                extra:
                  type: object
                  properties:
                    anything: {type: string}
            status:
              type: object
              properties:
                ready: {type: boolean}
                stuck:
                  type: object
                  properties:
                    count: {type: integer}
"#;

    #[test]
    fn the_same_schema_lacks_nothing() {
        assert_eq!(missing_fields(&crd(BUILT), &crd(BUILT)), Vec::<String>::new());
    }

    #[test]
    fn fields_an_older_schema_would_prune_are_named_outermost_first() {
        let old = BUILT
            .replace("                    memory: {type: string}\n", "")
            .replace("                      priority: {type: boolean}\n", "")
            .replace("                      note: {type: string}\n", "")
            .replace(
                "                stuck:\n                  type: object\n                  properties:\n                    count: {type: integer}\n",
                "",
            );
        assert_eq!(
            missing_fields(&crd(&old), &crd(BUILT)),
            ["spec.labels.*.note", "spec.limits.memory", "spec.queues[].priority", "status.stuck"]
        );
    }

    #[test]
    fn nothing_below_preserved_unknown_fields_is_pruned() {
        let old = BUILT.replace(
            "                extra:\n                  type: object\n                  properties:\n                    anything: {type: string}\n",
            "                extra:\n                  type: object\n                  x-kubernetes-preserve-unknown-fields: true\n",
        );
        assert_eq!(missing_fields(&crd(&old), &crd(BUILT)), Vec::<String>::new());
    }

    #[test]
    fn fields_only_the_served_crd_has_are_no_concern() {
        let newer = BUILT.replace(
            "                ready: {type: boolean}\n",
            "                ready: {type: boolean}\n                later: {type: string}\n",
        );
        assert_eq!(missing_fields(&crd(&newer), &crd(BUILT)), Vec::<String>::new());
    }

    #[test]
    fn a_version_not_served_is_missing() {
        let old = BUILT.replace("    - name: v1\n      served: true", "    - name: v1\n      served: false");
        assert_eq!(missing_fields(&crd(&old), &crd(BUILT)), ["version v1"]);
    }

    /// The chart's CRDs are the operator's own (a drift test elsewhere keeps them equal); one
    /// of a release before `spec.stuck` lacks it and `status.stuck`.
    #[test]
    fn the_charts_crds_are_current_and_an_older_one_is_not() {
        let chart = |file: &str| std::fs::read_to_string(format!("{}/../charts/mainstay/crds/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        for (file, built) in
            [("durableapps.yaml", DurableApp::crd()), ("schedules.yaml", Schedule::crd()), ("workflowruns.yaml", WorkflowRun::crd())]
        {
            assert_eq!(missing_fields(&crd(&chart(file)), &built), Vec::<String>::new(), "{file}");
        }
        let mut old = crd(&chart("durableapps.yaml"));
        for version in &mut old.spec.versions {
            let schema = version.schema.as_mut().and_then(|s| s.open_api_v3_schema.as_mut()).unwrap();
            for part in ["spec", "status"] {
                schema.properties.as_mut().unwrap().get_mut(part).unwrap().properties.as_mut().unwrap().remove("stuck");
            }
        }
        assert_eq!(missing_fields(&old, &DurableApp::crd()), ["spec.stuck", "status.stuck"]);
    }

    #[test]
    fn what_is_known_changes_only_when_the_fields_do() {
        let drift = CrdDrift::default();
        let mut changes = std::pin::pin!(drift.changes());
        let changed = |changes: &mut std::pin::Pin<&mut _>| futures::FutureExt::now_or_never(futures::StreamExt::next(changes)).is_some();
        assert!(drift.missing("a").is_empty());
        assert_eq!(drift.record("a", vec!["spec.x".into()]), Some(None));
        assert!(changed(&mut changes));
        assert_eq!(drift.record("a", vec!["spec.x".into()]), None);
        assert!(!changed(&mut changes));
        assert_eq!(drift.missing("a"), ["spec.x"]);
        assert_eq!(drift.record("a", vec![]), Some(Some(vec!["spec.x".to_string()])));
        assert!(changed(&mut changes));
        assert!(drift.missing("a").is_empty());
    }
}
