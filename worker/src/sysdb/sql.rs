//! Statement text: each statement is a constant template, rendered once per database handle by
//! one function that knows every placeholder and refuses any other.
//!
//! A placeholder is `{name}` (lowercase letters, digits, `_`). The names every template may use:
//! - `{s}`: the system schema, quoted;
//! - `{now}`: the transaction's start in epoch milliseconds; `{clock}`: the moment of
//!   evaluation (claims stamp starts with it, so stamps increase in claim order);
//! - `{scope}`: the rows an application's figures count, `$1` the application;
//! - `{retention2}`, `{retention3}`: the finished rows an application's retention may delete,
//!   the application in `$2` or `$3`.
//!
//! A statement may add names of its own (a column list, a sort direction, an operation name as
//! a quoted literal). A value may itself hold placeholders. Anything else in braces (`'{}'`, an
//! array literal `'{a,b}'`) is left alone. Every statement rendered is kept, so one test can
//! render them all and have Postgres prepare each against the migrated schema.
//!
//! Invariant: a rendered statement holds no placeholder. An unknown name is a bug in a
//! constant, so rendering panics with the template named; the all-statements test meets it
//! before any user can.

use std::sync::{Arc, Mutex};

/// The rows an application's figures count (`$1` the application; NULL counts every row): its
/// own, and rows of no application that its workers could claim (no version, or a version it
/// owns), so a DBOS client's version-less enqueue counts and work pinned to another
/// application's version, or to a version nobody owns, does not.
const APP_SCOPE: &str = "($1::text IS NULL OR application_name = $1 OR (application_name IS NULL AND \
    (application_version IS NULL OR application_version IN (SELECT version_name FROM {s}.application_versions \
     WHERE application_name = $1))))";

/// The finished rows an application's retention may delete (`{app}` the application; NULL:
/// every row): its own, and rows of no application pinned to a version it owns. Never another
/// application's, nor rows of no application and no version.
const RETENTION_SCOPE: &str = "({app}::text IS NULL OR application_name = {app} OR (application_name IS NULL AND \
    application_version IN (SELECT version_name FROM {s}.application_versions WHERE application_name = {app})))";

const NOW_MS: &str = "(EXTRACT(epoch FROM now()) * 1000)::bigint";
const CLOCK_MS: &str = "(EXTRACT(epoch FROM clock_timestamp()) * 1000)::bigint";

/// A shared name: (name, value, names the value adds).
type Shared = (&'static str, &'static str, &'static [(&'static str, &'static str)]);

/// The names every template may use besides `{s}`.
const SHARED: &[Shared] = &[
    ("now", NOW_MS, &[]),
    ("clock", CLOCK_MS, &[]),
    ("scope", APP_SCOPE, &[]),
    ("retention2", RETENTION_SCOPE, &[("app", "$2")]),
    ("retention3", RETENTION_SCOPE, &[("app", "$3")]),
];

/// Renders the statements of one schema and remembers each.
pub(crate) struct Renderer {
    schema: String,
    rendered: Mutex<Vec<Arc<str>>>,
}

impl Renderer {
    pub(crate) fn new(schema: &str) -> Renderer {
        Renderer { schema: format!("\"{schema}\""), rendered: Mutex::new(Vec::new()) }
    }

    /// `template` with every placeholder replaced.
    pub(crate) fn sql(&self, template: &str) -> Arc<str> {
        self.sql_with(template, &[])
    }

    /// `template` with every placeholder replaced, `names` added to the shared ones.
    pub(crate) fn sql_with(&self, template: &str, names: &[(&str, &str)]) -> Arc<str> {
        let text: Arc<str> = match expand(template, names, &self.schema, 0) {
            Ok(text) => Arc::from(text),
            Err(why) => panic!("statement template is broken ({why}): {template}"),
        };
        self.rendered.lock().unwrap_or_else(|e| e.into_inner()).push(text.clone());
        text
    }

    /// Every statement rendered so far.
    pub(crate) fn rendered(&self) -> Vec<Arc<str>> {
        self.rendered.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The placeholder name starting at `text[0]` (just after `{`), if `text` holds one.
fn placeholder(text: &str) -> Option<&str> {
    let end = text.find('}')?;
    let name = &text[..end];
    (!name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')).then_some(name)
}

fn expand(template: &str, names: &[(&str, &str)], schema: &str, depth: usize) -> Result<String, String> {
    if depth > 4 {
        return Err("placeholders nest more than 4 deep (a value names itself?)".into());
    }
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let Some(name) = placeholder(after) else {
            out.push('{');
            rest = after;
            continue;
        };
        if name == "s" {
            out.push_str(schema);
        } else if let Some((_, value)) = names.iter().find(|(n, _)| *n == name) {
            out.push_str(&expand(value, names, schema, depth + 1)?);
        } else if let Some((_, value, own)) = SHARED.iter().find(|(n, ..)| *n == name) {
            let combined: Vec<(&str, &str)> = own.iter().chain(names).copied().collect();
            out.push_str(&expand(value, &combined, schema, depth + 1)?);
        } else {
            return Err(format!("unknown placeholder {{{name}}}"));
        }
        rest = &after[name.len() + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_replaced_and_other_braces_kept() {
        let r = Renderer::new("dbos");
        let text = r.sql_with("SELECT '{}', '{a,b}', {x} FROM {s}.t WHERE {retention3} AND t < {now}", &[("x", "{s}.f()")]);
        assert!(text.starts_with("SELECT '{}', '{a,b}', \"dbos\".f() FROM \"dbos\".t WHERE ($3::text IS NULL"), "{text}");
        assert!(text.contains("application_name = $3 OR"), "{text}");
        assert!(text.ends_with("t < (EXTRACT(epoch FROM now()) * 1000)::bigint"), "{text}");
        assert_eq!(r.rendered().len(), 1);
    }

    #[test]
    fn an_unknown_placeholder_is_refused() {
        assert_eq!(expand("SELECT {nwo}", &[], "\"dbos\"", 0), Err("unknown placeholder {nwo}".to_string()));
        assert!(expand("{a}", &[("a", "{a}")], "\"dbos\"", 0).unwrap_err().contains("nest"));
        let caught = std::panic::catch_unwind(|| Renderer::new("dbos").sql("SELECT {colums} FROM {s}.t"));
        assert!(caught.is_err());
    }
}
