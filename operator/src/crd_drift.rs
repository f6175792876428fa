//! Whether the CRDs the API server serves are older than this operator: the fields the
//! operator knows that an installed CRD's schema lacks.
//!
//! Why it matters: the API server drops every field its schema does not declare (or, asked to
//! validate strictly, refuses the object). Helm installs CRDs but never upgrades them, so after
//! an upgrade that skipped applying the release's CRDs, a new spec field set through a client
//! that does not validate strictly is silently dropped (the operator falls back to its
//! default) and a new status field the operator writes never shows. This module names those
//! fields so the operator can say so; `crd_watch` feeds it. It also reads which fields the API
//! server refused in a server-side apply (it refuses, rather than drops, a field its schema
//! lacks there) and takes them, or those known to be missing, out of a status before it is
//! written, so the rest (the conditions that say what is wrong) still shows.
//!
//! Invariants: pure (no client). A field is missing only when the served schema would drop it.
//! Under `x-kubernetes-preserve-unknown-fields` undeclared fields are kept, but the declared
//! ones are still checked (and pruned within). Fields only the served CRD has (a newer CRD, an
//! operator rolled back) are no concern of this operator: it neither reads nor writes them. A
//! CRD not read yet counts as current: nothing is claimed that was not seen.

use std::collections::BTreeMap;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, CustomResourceDefinitionVersion, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};

/// The paths (`spec.stuck`, `spec.queues[].priority`, `spec.labels.*`, `version v1`) of what
/// `built` (the CRD this operator was built with) declares and `served` (the one installed)
/// would drop, outermost only: a missing object's own fields are not listed.
pub fn missing_fields(served: &CustomResourceDefinition, built: &CustomResourceDefinition) -> Vec<String> {
    let schema = |v: &CustomResourceDefinitionVersion| v.schema.as_ref().and_then(|s| s.open_api_v3_schema.clone());
    let mut missing = Vec::new();
    for version in &built.spec.versions {
        let Some(served_version) = served.spec.versions.iter().find(|v| v.name == version.name && v.served) else {
            missing.push(format!("version {}", version.name));
            continue;
        };
        match (schema(served_version), schema(version)) {
            (Some(served), Some(built)) => compare(&served, &built, "", &mut missing),
            // A v1 CRD must have a schema: without one this is not a CRD of ours at all.
            (None, Some(_)) => missing.push(format!("the schema of version {}", version.name)),
            (_, None) => {}
        }
    }
    missing
}

fn compare(served: &JSONSchemaProps, built: &JSONSchemaProps, path: &str, missing: &mut Vec<String>) {
    let join = |name: &str| if path.is_empty() { name.to_string() } else { format!("{path}.{name}") };
    let keeps_unknown = served.x_kubernetes_preserve_unknown_fields == Some(true);
    // Free-form here, structured there: whatever the operator puts under it that the served
    // schema does not declare is dropped.
    if built.x_kubernetes_preserve_unknown_fields == Some(true) && !keeps_unknown {
        missing.push(format!("{} (its free-form fields)", if path.is_empty() { "the root" } else { path }));
    }
    let no_properties = BTreeMap::new();
    let served_properties = served.properties.as_ref().unwrap_or(&no_properties);
    for (name, built_child) in built.properties.iter().flatten() {
        match served_properties.get(name) {
            Some(served_child) => compare(served_child, built_child, &join(name), missing),
            None if !keeps_unknown => missing.push(join(name)),
            None => {}
        }
    }
    if let (Some(JSONSchemaPropsOrArray::Schema(s)), Some(JSONSchemaPropsOrArray::Schema(b))) = (&served.items, &built.items) {
        compare(s, b, &format!("{path}[]"), missing);
    }
    match (&served.additional_properties, &built.additional_properties) {
        (Some(JSONSchemaPropsOrBool::Schema(s)), Some(JSONSchemaPropsOrBool::Schema(b))) => compare(s, b, &join("*"), missing),
        // A map here, fixed properties there: its entries are dropped.
        (None | Some(JSONSchemaPropsOrBool::Bool(false)), Some(JSONSchemaPropsOrBool::Schema(_))) if !keeps_unknown => {
            missing.push(join("*"))
        }
        _ => {}
    }
}

/// What is known of each served CRD of ours: its missing fields (none: current), by CRD name,
/// in a watch channel so whoever reports a CRD hears when its fields change.
pub struct CrdDrift {
    known: tokio::sync::watch::Sender<BTreeMap<String, Vec<String>>>,
}

impl Default for CrdDrift {
    fn default() -> Self {
        CrdDrift { known: tokio::sync::watch::Sender::new(BTreeMap::new()) }
    }
}

impl CrdDrift {
    /// Records what served CRD `crd` lacks. When that changed, returns what it lacked before
    /// (a CRD not read before lacked nothing) and tells the streams of [`CrdDrift::changes`].
    pub fn record(&self, crd: &str, missing: Vec<String>) -> Option<Vec<String>> {
        let mut before = None;
        self.known.send_if_modified(|known| {
            let old = known.insert(crd.to_string(), missing.clone()).unwrap_or_default();
            let changed = old != missing;
            before = changed.then_some(old);
            changed
        });
        before
    }

    /// Forgets CRD `crd` (deleted: nothing is claimed about it any more), as [`CrdDrift::record`].
    pub fn forget(&self, crd: &str) -> Option<Vec<String>> {
        let mut before = None;
        self.known.send_if_modified(|known| {
            before = known.remove(crd).filter(|old| !old.is_empty());
            before.is_some()
        });
        before
    }

    /// The fields served CRD `crd` lacks (none when it is current or not known).
    pub fn missing(&self, crd: &str) -> Vec<String> {
        self.known.borrow().get(crd).cloned().unwrap_or_default()
    }

    /// A stream that yields each time what CRD `crd` lacks changes, from now on.
    pub fn changes(&self, crd: &'static str) -> impl futures::Stream<Item = ()> + Send + 'static {
        let rx = self.known.subscribe();
        let last = self.missing(crd);
        futures::stream::unfold((rx, last), move |(mut rx, last)| async move {
            loop {
                rx.changed().await.ok()?;
                let now = rx.borrow_and_update().get(crd).cloned().unwrap_or_default();
                if now != last {
                    return Some(((), (rx, now)));
                }
            }
        })
    }
}

/// What to tell whoever installed the CRDs.
pub fn outdated_message(crd: &str, missing: &[String]) -> String {
    format!(
        "the installed CRD {crd} is older than this operator: its schema lacks {}, which the API server drops (a \
         spec field set there through Helm or another client that does not validate strictly falls back to its \
         default; what the operator reports there does not show). {}",
        missing.join(", "),
        apply_hint()
    )
}

/// One step of a field path: a field (`*`: every entry of a map), and whether the path goes on
/// into every element of the list it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub field: String,
    pub each: bool,
}

/// A path written as [`missing_fields`] writes them (`status.queues[].depth`).
pub fn display_path(path: &[Step]) -> String {
    path.iter().map(|s| if s.each { format!("{}[]", s.field) } else { s.field.clone() }).collect::<Vec<_>>().join(".")
}

/// The paths among `missing` (as [`missing_fields`] names them) inside the status, from the
/// object's root; the others (a version, a free-form node) name nothing a status write can
/// leave out.
pub fn status_paths(missing: &[String]) -> Vec<Vec<Step>> {
    missing
        .iter()
        .filter(|m| m.starts_with("status.") && !m.contains(' '))
        .map(|m| {
            m.split('.')
                .map(|f| match f.strip_suffix("[]") {
                    Some(field) => Step { field: field.to_string(), each: true },
                    None => Step { field: f.to_string(), each: false },
                })
                .collect()
        })
        .collect()
}

/// The fields a server-side apply was refused for ("….status.stuck: field not declared in
/// schema", one or several in a list), as paths from the object's root. A path this cannot read
/// (a map key with a dot in it) is left out: the write it came from fails as it did.
pub fn undeclared_fields(message: &str) -> Vec<Vec<Step>> {
    const UNDECLARED: &str = ": field not declared in schema";
    let mut paths = Vec::new();
    let mut rest = message;
    while let Some(end) = rest.find(UNDECLARED) {
        let before = &rest[..end];
        // The path starts with a dot after a space or an opening bracket (a list of errors).
        let start = [" .", "[."].iter().filter_map(|p| before.rfind(p).map(|i| i + 1)).max().or(before.starts_with('.').then_some(0));
        if let Some(path) = start.and_then(|start| parse_refused(&before[start..])) {
            paths.push(path);
        }
        rest = &rest[end + UNDECLARED.len()..];
    }
    paths
}

/// Reads `.status.queues[name="a"].depth`: the element selector stands for every element.
fn parse_refused(path: &str) -> Option<Vec<Step>> {
    let mut steps = Vec::new();
    let mut chars = path.chars().peekable();
    while chars.next_if_eq(&'.').is_some() {
        let mut field = String::new();
        while let Some(c) = chars.next_if(|c| *c != '.' && *c != '[') {
            field.push(c);
        }
        let mut each = false;
        if chars.next_if_eq(&'[').is_some() {
            // A list element by key or index: skip to its closing bracket, minding quotes.
            let mut quoted = false;
            loop {
                match chars.next()? {
                    '"' => quoted = !quoted,
                    '\\' if quoted => {
                        chars.next()?;
                    }
                    ']' if !quoted => break,
                    _ => {}
                }
            }
            each = true;
        }
        if field.is_empty() {
            return None;
        }
        steps.push(Step { field, each });
    }
    (chars.peek().is_none() && !steps.is_empty()).then_some(steps)
}

/// Removes the field at `path` from `object`, from every element of each list and every entry
/// of each map (`*`) on the way; returns whether there was something to remove.
pub fn remove_field(object: &mut serde_json::Value, path: &[Step]) -> bool {
    let Some((step, rest)) = path.split_first() else { return false };
    let Some(fields) = object.as_object_mut() else { return false };
    let last = rest.is_empty() && !step.each;
    let children: Vec<&mut serde_json::Value> = match (step.field == "*", last) {
        (true, true) => {
            let had = !fields.is_empty();
            fields.clear();
            return had;
        }
        (false, true) => return fields.remove(&step.field).is_some(),
        (true, false) => fields.values_mut().collect(),
        (false, false) => fields.get_mut(&step.field).into_iter().collect(),
    };
    let mut removed = false;
    for child in children {
        if !step.each {
            removed |= remove_field(child, rest);
        } else if let Some(elements) = child.as_array_mut() {
            // `each` on the last step names an element, not a field: nothing to take away.
            for element in elements {
                removed |= !rest.is_empty() && remove_field(element, rest);
            }
        }
    }
    removed
}

/// Takes `paths` out of `object`; returns those that were there, as [`display_path`] writes them.
pub fn take_out(object: &mut serde_json::Value, paths: &[Vec<Step>]) -> Vec<String> {
    paths.iter().filter(|p| remove_field(object, p)).map(|p| display_path(p)).collect()
}

/// Takes `paths` (what the installed CRD lacks) out of the status apply `patch`; returns
/// whether it is still worth sending: not when it differs from the `stored` status only in
/// what was taken out (which the stored object cannot hold).
pub fn leave_out(patch: &mut serde_json::Value, stored: Option<serde_json::Value>, paths: &[Vec<Step>]) -> bool {
    if take_out(patch, paths).is_empty() {
        return true;
    }
    let mut stored = serde_json::json!({ "status": stored });
    take_out(&mut stored, paths);
    stored["status"] != patch["status"]
}

/// How to bring the CRDs up to date.
pub fn apply_hint() -> String {
    format!(
        "Apply the CRDs of this release: `kubectl apply --server-side -f {}/` (or `helm show crds CHART | kubectl apply \
         --server-side -f -`); Helm installs CRDs but never upgrades them",
        mainstay_crds::CHART_CRD_DIR
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
    fn fields_an_older_schema_would_drop_are_named_outermost_only() {
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
    fn preserved_unknown_fields_are_kept_but_declared_ones_still_checked() {
        let free_form = BUILT.replace(
            "                extra:\n                  type: object\n                  properties:\n                    anything: {type: string}\n",
            "                extra:\n                  type: object\n                  x-kubernetes-preserve-unknown-fields: true\n",
        );
        assert_eq!(missing_fields(&crd(&free_form), &crd(BUILT)), Vec::<String>::new());
        // The served schema keeps unknown fields under spec, but prunes inside what it declares.
        let old = BUILT
            .replace(
                "            spec:\n              type: object\n",
                "            spec:\n              type: object\n              x-kubernetes-preserve-unknown-fields: true\n",
            )
            .replace("                size: {type: integer}\n", "")
            .replace("                    memory: {type: string}\n", "");
        assert_eq!(missing_fields(&crd(&old), &crd(BUILT)), ["spec.limits.memory"]);
        // Free-form in the operator's schema, structured in the served one; a map there, fixed
        // properties here.
        assert_eq!(missing_fields(&crd(BUILT), &crd(&free_form)), ["spec.extra (its free-form fields)"]);
        let fixed = BUILT.replace(
            "                  additionalProperties:\n                    type: object\n                    properties:\n                      value: {type: string}\n                      note: {type: string}\n",
            "                  properties:\n                    value: {type: string}\n",
        );
        assert_eq!(missing_fields(&crd(&fixed), &crd(BUILT)), ["spec.labels.*"]);
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

    fn chart_file(path: &str) -> String {
        let path = format!("{}/../{path}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// The chart's CRDs are the operator's own (a drift test elsewhere keeps them equal); one
    /// of a release before `spec.stuck` lacks it and `status.stuck`.
    #[test]
    fn the_charts_crds_are_current_and_an_older_one_is_not() {
        let chart = |file: &str| crd(&chart_file(&format!("{}/{file}", mainstay_crds::CHART_CRD_DIR)));
        for (file, built) in mainstay_crds::crds() {
            assert_eq!(missing_fields(&chart(file), &built), Vec::<String>::new(), "{file}");
        }
        let mut old = chart("durableapps.yaml");
        for version in &mut old.spec.versions {
            let schema = version.schema.as_mut().and_then(|s| s.open_api_v3_schema.as_mut()).unwrap();
            for part in ["spec", "status"] {
                schema.properties.as_mut().unwrap().get_mut(part).unwrap().properties.as_mut().unwrap().remove("stuck");
            }
        }
        assert_eq!(missing_fields(&old, &DurableApp::crd()), ["spec.stuck", "status.stuck"]);
    }

    /// The chart lets the operator read exactly its CRDs: the names it grants are theirs.
    #[test]
    fn the_chart_grants_reading_the_operators_crds() {
        let rbac = chart_file("charts/mainstay/templates/rbac.yaml");
        let granted = rbac
            .lines()
            .find_map(|l| l.trim().strip_prefix("resourceNames: ").filter(|names| names.contains(".mainstay.dev")))
            .expect("a rule naming the CRDs");
        let mut granted: Vec<String> = yaml_serde::from_str(granted).expect("a YAML list of names");
        granted.sort();
        let mut ours = vec![DurableApp::crd_name(), Schedule::crd_name(), WorkflowRun::crd_name()];
        ours.sort();
        assert_eq!(granted, ours);
    }

    #[test]
    fn what_is_known_changes_only_when_the_fields_do() {
        use futures::{FutureExt as _, StreamExt as _};
        let drift = CrdDrift::default();
        let mut changes = std::pin::pin!(drift.changes("a"));
        let mut others = std::pin::pin!(drift.changes("b"));
        // Read and current: no change (unknown counted as current).
        assert_eq!(drift.record("a", vec![]), None);
        assert!(changes.next().now_or_never().is_none());
        assert_eq!(drift.record("a", vec!["spec.x".into()]), Some(vec![]));
        assert_eq!(changes.next().now_or_never(), Some(Some(())));
        assert_eq!(drift.record("a", vec!["spec.x".into()]), None);
        assert!(changes.next().now_or_never().is_none());
        assert_eq!(drift.missing("a"), ["spec.x"]);
        assert!(others.next().now_or_never().is_none(), "b's reporters hear nothing of a");
        assert_eq!(drift.forget("a"), Some(vec!["spec.x".to_string()]));
        assert_eq!(changes.next().now_or_never(), Some(Some(())));
        assert!(drift.missing("a").is_empty());
    }

    #[test]
    fn refused_fields_are_read_from_the_api_servers_message_and_removed() {
        let one = "failed to create typed patch object (ns/shop; mainstay.dev/v1alpha1, Kind=DurableApp): .status.stuck: \
                   field not declared in schema";
        let step = |field: &str, each: bool| Step { field: field.into(), each };
        assert_eq!(undeclared_fields(one), [vec![step("status", false), step("stuck", false)]]);
        // Several, as the API server lists them, and as a list of errors elsewhere.
        let listed = "failed to create typed patch object (x): errors:\n  .status.queues[name=\"a.b]\"].depth: field not declared in \
                      schema\n  .status.late: field not declared in schema";
        let bracketed =
            r#"(x): [.status.queues[name="a.b]"].depth: field not declared in schema, .status.late: field not declared in schema]"#;
        let paths = undeclared_fields(listed);
        assert_eq!(
            paths,
            [vec![step("status", false), step("queues", true), step("depth", false)], vec![step("status", false), step("late", false)]]
        );
        assert_eq!(undeclared_fields(bracketed), paths);
        assert!(undeclared_fields("the server could not find the requested resource").is_empty());

        let mut patch = serde_json::json!({
            "apiVersion": "mainstay.dev/v1alpha1",
            "status": {"late": 1, "ready": true, "queues": [{"name": "a.b]", "depth": 3}, {"name": "c", "depth": 4}]},
        });
        assert_eq!(take_out(&mut patch, &paths), ["status.queues[].depth", "status.late"]);
        assert_eq!(
            patch,
            serde_json::json!({"apiVersion": "mainstay.dev/v1alpha1", "status": {"ready": true, "queues": [{"name": "a.b]"}, {"name": "c"}]}})
        );
        assert!(take_out(&mut patch, &paths).is_empty(), "already gone");
    }

    #[test]
    fn what_a_served_crd_lacks_in_the_status_is_taken_out_before_writing() {
        let missing =
            ["spec.stuck", "status.stuck", "status.labels.*", "status.versions[].note", "version v2", "status (its free-form fields)"];
        let paths = status_paths(&missing.map(String::from));
        assert_eq!(
            paths.iter().map(|p| display_path(p)).collect::<Vec<_>>(),
            ["status.stuck", "status.labels.*", "status.versions[].note"]
        );
        let mut patch = serde_json::json!({"status": {
            "stuck": {"stalledWorkflows": 1},
            "labels": {"a": "1", "b": "2"},
            "versions": [{"name": "v1", "note": "x"}, {"name": "v2"}],
            "ready": true,
        }});
        assert_eq!(take_out(&mut patch, &paths), ["status.stuck", "status.labels.*", "status.versions[].note"]);
        assert_eq!(patch, serde_json::json!({"status": {"labels": {}, "versions": [{"name": "v1"}, {"name": "v2"}], "ready": true}}));
        // Fields within each entry of a map.
        let mut patch = serde_json::json!({"status": {"labels": {"a": {"keep": 1, "drop": 2}, "b": {"drop": 3}}}});
        let within = status_paths(&["status.labels.*.drop".to_string()]);
        assert_eq!(take_out(&mut patch, &within), ["status.labels.*.drop"]);
        assert_eq!(patch, serde_json::json!({"status": {"labels": {"a": {"keep": 1}, "b": {}}}}));
    }

    #[test]
    fn a_status_differing_only_in_what_the_crd_lacks_is_not_written() {
        let paths = status_paths(&["status.stuck".to_string()]);
        let status = |stuck: bool, ready: bool| {
            let mut s = serde_json::json!({"ready": ready});
            if stuck {
                s["stuck"] = serde_json::json!({"stalledWorkflows": 1});
            }
            s
        };
        let patch = |s: serde_json::Value| serde_json::json!({"kind": "DurableApp", "status": s});
        // The stored object cannot hold `stuck`: the same status otherwise is no change.
        let mut p = patch(status(true, true));
        assert!(!leave_out(&mut p, Some(status(false, true)), &paths));
        assert_eq!(p, patch(status(false, true)));
        // Anything else that changed is written (without `stuck`).
        let mut p = patch(status(true, false));
        assert!(leave_out(&mut p, Some(status(false, true)), &paths));
        assert_eq!(p, patch(status(false, false)));
        // No status yet, or nothing to leave out: written as it is.
        assert!(leave_out(&mut patch(status(true, true)), None, &paths));
        let mut p = patch(status(false, true));
        assert!(leave_out(&mut p, Some(status(false, true)), &paths), "the caller compares typed statuses first");
    }
}
