//! Schema transforms for what schemars' derive cannot say directly.

use schemars::transform::transform_subschemas;
use schemars::Schema;

/// Drops every schema `default` in this schema and below; serde's defaults still apply when the
/// operator reads the resource. For types used as list items: the apiserver would fill the
/// default into every element, the stored list would never equal the applied one, and
/// `kubectl apply` of an unchanged resource would report `configured` every time. State the
/// default in the field's description instead.
pub(crate) fn without_defaults(schema: &mut Schema) {
    schema.remove("default");
    let mut recurse = without_defaults;
    transform_subschemas(&mut recurse, schema);
}

/// An optional enum without `null` among its values: schemars lists `null` as a value of an
/// `Option<Enum>`, which `kubectl explain` shows. The field stays optional (omitted when unset);
/// an explicit `null` is pruned by the apiserver, as for any field that is not `nullable`.
pub(crate) fn optional_enum(schema: &mut Schema) {
    if let Some(values) = schema.get_mut("enum").and_then(|e| e.as_array_mut()) {
        values.retain(|v| !v.is_null());
    }
    if let Some(types) = schema.get_mut("type").and_then(|t| t.as_array_mut()) {
        types.retain(|t| t != "null");
        if types.len() == 1 {
            let only = types.remove(0);
            schema.insert("type".into(), only);
        }
    }
    schema.remove("nullable");
}

/// Any JSON value (workflow inputs): kept as given.
pub(crate) fn any_json(_: &mut schemars::SchemaGenerator) -> Schema {
    schemars::json_schema!({ "x-kubernetes-preserve-unknown-fields": true })
}
