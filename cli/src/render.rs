//! Output of the CLI: readable tables by default, JSON (one document) with `--json`.

use comfy_table::{presets, ContentArrangement, Table};
use serde::Serialize;

/// Prints `rows` as a table with `headers`, or `value` as JSON.
pub fn print<T: Serialize>(json: bool, value: &T, headers: &[&str], rows: Vec<Vec<String>>) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
        return Ok(());
    }
    if rows.is_empty() {
        println!("(none)");
        return Ok(());
    }
    let mut table = Table::new();
    table.load_style(presets::NOTHING).set_content_arrangement(ContentArrangement::Disabled).set_header(headers.to_vec());
    for row in rows {
        table.add_row(row);
    }
    println!("{table}");
    Ok(())
}

/// An epoch-millisecond time as UTC RFC 3339 (empty when unset).
pub fn time(ms: Option<i64>) -> String {
    ms.and_then(chrono::DateTime::from_timestamp_millis).map(|t| t.format("%Y-%m-%d %H:%M:%S%.3fZ").to_string()).unwrap_or_default()
}

/// An optional value, or empty.
pub fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map(ToString::to_string).unwrap_or_default()
}

/// JSON shortened for a table cell.
pub fn short(v: &Option<serde_json::Value>) -> String {
    let Some(v) = v else { return String::new() };
    let text = v.to_string();
    if text.chars().count() > 60 {
        format!("{}…", text.chars().take(59).collect::<String>())
    } else {
        text
    }
}
