//! The layers of `src/` hold: `model` imports nothing from `sysdb` or `runtime`, `sysdb` imports
//! only from `model` (and itself), `runtime` may import anything. So the import graph has no
//! cycle through `sysdb` or `model`.
//!
//! The check tokenizes the source with `proc-macro2` (comments and string literals are not
//! code) and resolves every path that starts with `crate::` or `super::` (in `use` trees,
//! expressions, types, patterns) to the module it names, tracking inline modules for `super`.
//! Inside `model` and `sysdb` a path must name its layer (`crate::model::error::Error`, not the
//! root re-export `crate::Error`), so no import hides where it comes from.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use proc_macro2::{Delimiter, TokenStream, TokenTree};

const LAYERS: [&str; 3] = ["model", "sysdb", "runtime"];

/// What a module of `layer` may import from.
fn allowed(layer: &str) -> &'static [&'static str] {
    match layer {
        "model" => &["model"],
        "sysdb" => &["model", "sysdb"],
        _ => &["model", "sysdb", "runtime"],
    }
}

fn is_path_sep(tokens: &[TokenTree], i: usize) -> bool {
    matches!((tokens.get(i), tokens.get(i + 1)), (Some(TokenTree::Punct(a)), Some(TokenTree::Punct(b))) if a.as_char() == ':' && b.as_char() == ':')
}

/// Every `crate::`/`super::`/`self::` path in a token stream, resolved from `module`.
fn paths(stream: TokenStream, module: &[String], out: &mut Vec<Vec<String>>) {
    let tokens: Vec<TokenTree> = stream.into_iter().collect();
    let mut i = 0;
    while i < tokens.len() {
        match &tokens[i] {
            // `mod name { ... }`: an inline module, for `super` inside it.
            TokenTree::Ident(m) if m == "mod" => {
                if let (Some(TokenTree::Ident(name)), Some(TokenTree::Group(g))) = (tokens.get(i + 1), tokens.get(i + 2)) {
                    if g.delimiter() == Delimiter::Brace {
                        let mut inner = module.to_vec();
                        inner.push(name.to_string());
                        paths(g.stream(), &inner, out);
                        i += 3;
                        continue;
                    }
                }
                i += 1;
            }
            TokenTree::Ident(start) if (start == "crate" || start == "super" || start == "self") && is_path_sep(&tokens, i + 1) => {
                let mut segments = vec![start.to_string()];
                let mut j = i + 1;
                while is_path_sep(&tokens, j) {
                    match tokens.get(j + 2) {
                        Some(TokenTree::Ident(seg)) => {
                            segments.push(seg.to_string());
                            j += 3;
                        }
                        // `crate::{a::b, c}`: each item continues the path.
                        Some(TokenTree::Group(g)) if g.delimiter() == Delimiter::Brace => {
                            for item in split_commas(g.stream()) {
                                let mut full: Vec<String> = segments.clone();
                                full.extend(
                                    item.iter()
                                        .filter_map(|t| match t {
                                            TokenTree::Ident(id) => Some(id.to_string()),
                                            _ => None,
                                        })
                                        .take_while(|s| s != "as"),
                                );
                                out.push(resolve(module, &full));
                            }
                            j += 3;
                            segments.clear();
                            break;
                        }
                        _ => {
                            j += 2;
                            break;
                        }
                    }
                }
                if !segments.is_empty() {
                    out.push(resolve(module, &segments));
                }
                i = j;
            }
            TokenTree::Group(g) => {
                paths(g.stream(), module, out);
                i += 1;
            }
            _ => i += 1,
        }
    }
}

/// The items of a `use` group, split at top-level commas (nested groups stay whole: their
/// first identifiers name the module, which is what the check needs).
fn split_commas(stream: TokenStream) -> Vec<Vec<TokenTree>> {
    let mut items = vec![Vec::new()];
    for t in stream {
        match &t {
            TokenTree::Punct(p) if p.as_char() == ',' => items.push(Vec::new()),
            _ => items.last_mut().unwrap().push(t),
        }
    }
    items.retain(|i| !i.is_empty());
    items
}

/// An absolute module path for `segments` written in `module`.
fn resolve(module: &[String], segments: &[String]) -> Vec<String> {
    let (mut base, mut rest) = match segments.first().map(String::as_str) {
        Some("crate") => (Vec::new(), &segments[1..]),
        _ => (module.to_vec(), segments),
    };
    while let Some(first) = rest.first() {
        match first.as_str() {
            "super" => {
                base.pop();
            }
            "self" => {}
            _ => break,
        }
        rest = &rest[1..];
    }
    base.extend(rest.iter().cloned());
    base
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module a source file defines, from the crate root (`src/sysdb/mod.rs` → `sysdb`).
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if matches!(parts.last().map(String::as_str), Some("mod") | Some("lib")) {
        parts.pop();
    }
    parts
}

/// Every import that breaks the layering, as "file: path (reason)".
fn violations(src: &Path) -> (usize, Vec<String>) {
    let mut files = Vec::new();
    sources(src, &mut files);
    let mut checked = 0;
    let mut bad = Vec::new();
    for file in &files {
        let module = module_of(src, file);
        let Some(layer) = module.first().cloned() else { continue }; // lib.rs: the public API
        assert!(LAYERS.contains(&layer.as_str()), "{}: a module outside the layers {LAYERS:?}", file.display());
        let text = std::fs::read_to_string(file).unwrap();
        let stream = TokenStream::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let mut found = Vec::new();
        paths(stream, &module, &mut found);
        for target in found {
            let shown = format!("{}: crate::{}", file.display(), target.join("::"));
            checked += 1;
            match target.first().map(String::as_str) {
                Some(to) if LAYERS.contains(&to) => {
                    if !allowed(&layer).contains(&to) {
                        bad.push(format!("{shown} ({layer} may not import from {to})"));
                    }
                }
                // A root re-export: fine on top, hides the origin below.
                _ if layer == "runtime" => {}
                _ => bad.push(format!("{shown} (name the layer: crate::model::… or crate::sysdb::…)")),
            }
        }
    }
    (checked, bad)
}

#[test]
fn each_layer_imports_only_from_the_layers_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let (checked, bad) = violations(&src);
    assert!(checked > 300, "only {checked} crate paths found: the scan is broken");
    assert!(bad.is_empty(), "imports against the layering (model < sysdb < runtime):\n{}", bad.join("\n"));
}

#[test]
fn the_check_sees_a_violation() {
    let dir = std::env::temp_dir().join(format!("mainstay-layers-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("sysdb")).unwrap();
    std::fs::create_dir_all(dir.join("model")).unwrap();
    std::fs::write(dir.join("model/status.rs"), "use crate::sysdb::SystemDatabase;\nfn f() { crate::Client::x(); }").unwrap();
    std::fs::write(dir.join("sysdb/mod.rs"), "use crate::model::status::Status;\nuse super::runtime::app::Runtime;").unwrap();
    let (checked, bad) = violations(&dir);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(checked, 4);
    assert_eq!(bad.len(), 3, "{bad:#?}");
    assert!(bad[0].contains("model may not import from sysdb") || bad.iter().any(|b| b.contains("model may not import from sysdb")));
    assert!(bad.iter().any(|b| b.contains("sysdb may not import from runtime")), "{bad:#?}");
    assert!(bad.iter().any(|b| b.contains("crate::Client") && b.contains("name the layer")), "{bad:#?}");
}
