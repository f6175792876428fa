//! The layers of `src/` hold: `model` imports nothing from `sysdb` or `runtime`, `sysdb` imports
//! only from `model` (and itself), `runtime` may import anything. So the import graph has no
//! cycle through `sysdb` or `model`.
//!
//! The check reads the source with `syn`: every `use` and every path in code (expressions,
//! types, patterns) that starts with `crate::` or `super::` is resolved to the module it names.
//! Inside `model` and `sysdb` a path must name its layer (`crate::model::error::Error`, not the
//! root re-export `crate::Error`), so no import hides where it comes from.

use std::path::{Path, PathBuf};

use syn::visit::Visit;

const LAYERS: [&str; 3] = ["model", "sysdb", "runtime"];

/// What a module of `layer` may import from.
fn allowed(layer: &str) -> &'static [&'static str] {
    match layer {
        "model" => &["model"],
        "sysdb" => &["model", "sysdb"],
        _ => &["model", "sysdb", "runtime"],
    }
}

struct Imports<'a> {
    /// The module the visitor is in (file module plus inline modules), from the crate root.
    module: Vec<String>,
    file: &'a Path,
    found: Vec<(Vec<String>, String)>,
}

impl Imports<'_> {
    /// Resolves a path's leading `crate`/`super`/`self` segments to an absolute module path.
    fn record(&mut self, segments: Vec<String>) {
        let (mut base, rest) = match segments.first().map(String::as_str) {
            Some("crate") => (Vec::new(), &segments[1..]),
            Some("super") | Some("self") => (self.module.clone(), &segments[..]),
            _ => return,
        };
        let mut rest = rest;
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
        self.found.push((base, format!("{}: {}", self.file.display(), segments.join("::"))));
    }

    fn use_tree(&mut self, prefix: Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                let mut next = prefix;
                next.push(p.ident.to_string());
                self.use_tree(next, &p.tree);
            }
            syn::UseTree::Name(n) => {
                let mut full = prefix;
                full.push(n.ident.to_string());
                self.record(full);
            }
            syn::UseTree::Rename(r) => {
                let mut full = prefix;
                full.push(r.ident.to_string());
                self.record(full);
            }
            syn::UseTree::Glob(_) => self.record(prefix),
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.use_tree(prefix.clone(), t);
                }
            }
        }
    }
}

impl<'ast> Visit<'ast> for Imports<'_> {
    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        self.use_tree(Vec::new(), &u.tree);
    }

    fn visit_path(&mut self, p: &'ast syn::Path) {
        self.record(p.segments.iter().map(|s| s.ident.to_string()).collect());
        syn::visit::visit_path(self, p);
    }

    // `pub(crate)` and `pub(super)` name who may see an item, not an import.
    fn visit_visibility(&mut self, _: &'ast syn::Visibility) {}

    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        self.module.push(m.ident.to_string());
        syn::visit::visit_item_mod(self, m);
        self.module.pop();
    }
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
        let ast = syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let mut imports = Imports { module, file, found: Vec::new() };
        imports.visit_file(&ast);
        for (target, shown) in imports.found {
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
