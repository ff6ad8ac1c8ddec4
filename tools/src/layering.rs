//! This crate's layers, checked on its sources (docs/ARCHITECTURE.md,
//! "Layers"): the plotting code never imports the tools or the command
//! line's dispatch; the tools never import the dispatch. (That the VMM
//! library imports none of this crate, nor `plotters`, the compiler
//! holds: it does not depend on it.)

use std::path::{Path, PathBuf};

/// Where a source file under `tools/src` stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layer {
    /// `main.rs`, `app.rs`: the command line, which reaches everything.
    Top,
    /// `bench/`, `stress.rs`, `locktest/`.
    Tool,
    /// `plot/`.
    Plot,
    /// Everything else (`lib.rs`).
    Core,
}

impl Layer {
    fn of(rel: &str) -> Self {
        match rel {
            "main.rs" | "app.rs" => Layer::Top,
            "stress.rs" => Layer::Tool,
            _ if rel.starts_with("bench/") || rel.starts_with("locktest/") => Layer::Tool,
            _ if rel.starts_with("plot/") => Layer::Plot,
            _ => Layer::Core,
        }
    }

    /// The crate's top-level modules this layer may not use.
    fn forbidden(self) -> &'static [&'static str] {
        match self {
            Layer::Top => &[],
            Layer::Tool => &["app"],
            Layer::Plot => &["app", "bench", "stress", "locktest"],
            Layer::Core => &["app", "bench", "stress", "locktest", "plot"],
        }
    }
}

/// The source without `//` comments (doc comments may name any module).
fn code(text: &str) -> String {
    text.lines().map(|l| l.find("//").map_or(l, |i| &l[..i])).collect::<Vec<_>>().join("\n")
}

/// The crate's top-level modules that `code` names in `crate::` paths,
/// `crate::{a::b, c}` groups included.
fn crate_modules(code: &str) -> Vec<String> {
    let ident = |s: &str| s.trim_start().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect::<String>();
    let mut found = Vec::new();
    for (i, _) in code.match_indices("crate::") {
        // `rtswitch_crate::` or similar is another name.
        if code[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let rest = code[i + "crate::".len()..].trim_start();
        let Some(group) = rest.strip_prefix('{') else {
            found.push(ident(rest));
            continue;
        };
        let (mut depth, mut start) = (0usize, 0usize);
        for (j, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    found.push(ident(&group[start..j]));
                    break;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    found.push(ident(&group[start..j]));
                    start = j + 1;
                }
                _ => {}
            }
        }
    }
    found.retain(|m| !m.is_empty());
    found
}

/// Every `.rs` file below `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// What `rel`'s `text` imports that its layer may not: one line each.
fn violations(rel: &str, text: &str) -> Vec<String> {
    let layer = Layer::of(rel);
    let code = code(text);
    let mut bad: Vec<String> = crate_modules(&code)
        .into_iter()
        .filter(|m| layer.forbidden().contains(&m.as_str()))
        .map(|m| format!("tools/src/{rel} ({layer:?}) imports crate::{m}"))
        .collect();
    if layer == Layer::Core && code.contains("plotters::") {
        bad.push(format!("tools/src/{rel} ({layer:?}) uses the plotters crate"));
    }
    bad.dedup();
    bad
}

#[test]
fn the_plots_and_the_tools_import_nothing_above_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut bad = Vec::new();
    for path in &files {
        let rel = path.strip_prefix(&src).unwrap().to_string_lossy().replace('\\', "/");
        if rel == "layering.rs" {
            continue;
        }
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        bad.extend(violations(&rel, &text));
    }
    assert!(files.len() > 15, "read only {} source files under {}", files.len(), src.display());
    assert!(
        bad.is_empty(),
        "imports across the layers (docs/ARCHITECTURE.md, \"Layers\"; move shared code down into the core):\n  {}",
        bad.join("\n  ")
    );
}

#[test]
fn the_check_sees_paths_groups_and_the_plotters_crate() {
    assert_eq!(crate_modules("use crate::{bench::x, report::{a, b}, stats};"), ["bench", "report", "stats"]);
    assert_eq!(crate_modules("crate::stress::run(&a); my_crate::bench"), ["stress"]);
    assert!(violations("report/mod.rs", "use crate::plot::run;").iter().any(|v| v.contains("crate::plot")));
    assert!(violations("report/mod.rs", "use plotters::prelude::*;").iter().any(|v| v.contains("plotters")));
    assert!(violations("report/mod.rs", "//! see crate::bench::plots").is_empty(), "comments are not imports");
    assert!(violations("plot/run.rs", "use crate::{report, bench};").iter().any(|v| v.contains("crate::bench")));
    assert!(violations("plot/run.rs", "use plotters::prelude::*; use crate::report;").is_empty());
    assert!(violations("bench/mod.rs", "use crate::{plot, report, units};").is_empty());
    assert!(violations("app.rs", "crate::bench::run(&a)").is_empty());
    assert!(violations("locktest/run.rs", "use crate::app::Cli;").iter().any(|v| v.contains("crate::app")));
    assert!(violations("plot/run.rs", "crate::locktest::run").iter().any(|v| v.contains("crate::locktest")));
    assert!(violations("locktest/mod.rs", "use crate::locktest::parse;").is_empty());
}
