//! The guest kernel's layers, checked on its sources (docs/ARCHITECTURE.md,
//! "Guest layering"): every file under `guest/src` is in the layer its
//! top folder names (`main.rs` is the top); a file imports only its own
//! layer and those below it; `unsafe` appears only in the layers that need
//! it and in the few files [`UNSAFE_FILES`] names with its reason; and the
//! document lists the same layers in the same order.
//!
//! Imports are `crate::` paths (`$crate::` in macros, `crate::{a, b}`
//! groups), `super::` paths that climb to the crate root, and the console's
//! `print!`/`println!` (exported at the root by `hv::console`). Comments
//! and string literals are not code.

use std::path::{Path, PathBuf};

/// The layers, lowest first: each the name of a folder under `guest/src`,
/// and whether its files may contain `unsafe`.
const LAYERS: &[(&str, bool)] = &[
    // The protocol cores, compiled for the host too: no `unsafe`.
    ("logic", false),
    // Privileged instructions, descriptor tables, entry stubs, MSRs, GS.
    ("arch", true),
    // The VMM's pages (volatile access at fixed addresses), the doorbell
    // write, the patchable call sites' asm, the ABI note's section.
    ("hv", true),
    // The context switch, the task table and its stacks, the intrusive run
    // queues, the raw spinlock's cell, the heartbeat page.
    ("sched", true),
    // Lock cells (`UnsafeCell`, `Sync`), the lock implementations' C ABI
    // on raw `LockCore` pointers, the lock registry and lock table pages.
    ("sync", true),
    // The page tables.
    ("mm", true),
    ("workload", false),
    ("diag", false),
    ("switch", false),
    ("irq", false),
    // With `main.rs`: the top.
    ("boot", false),
];

/// Files that may contain `unsafe` in a layer that may not, and why.
const UNSAFE_FILES: &[(&str, &str)] = &[
    ("main.rs", "`_start`'s boot stacks (no_mangle, link_section) and the guest arguments' deliberate faults"),
    (
        "workload/telemetry.rs",
        "the telemetry region is shared memory laid out at boot: raw pointers into it, bounded by its checked Layout",
    ),
    (
        "diag/faults.rs",
        "fault injection writes where nothing may, on purpose (the mailbox, the telemetry header, text)",
    ),
];

/// The layer of the top-level module `name`: a layer folder, or the
/// console's macros (exported at the crate root).
fn layer_of_module(name: &str) -> Option<usize> {
    match name {
        "print" | "println" => layer_index("hv"),
        _ => layer_index(name),
    }
}

fn layer_index(folder: &str) -> Option<usize> {
    LAYERS.iter().position(|(l, _)| *l == folder)
}

/// The layer of the file at `rel` (relative to `guest/src`).
fn layer_of_file(rel: &str) -> Result<usize, String> {
    if rel == "main.rs" {
        return Ok(LAYERS.len() - 1);
    }
    let folder = rel.split('/').next().unwrap_or(rel);
    match rel.contains('/').then(|| layer_index(folder)).flatten() {
        Some(l) => Ok(l),
        None => Err(format!("guest/src/{rel}: in no layer (a layer is a folder of docs/ARCHITECTURE.md's list)")),
    }
}

/// `text` with comments and the contents of string and char literals
/// blanked (newlines kept, so offsets keep their line).
fn code(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let blank = |out: &mut String, s: &str| out.extend(s.chars().map(|c| if c == '\n' { '\n' } else { ' ' }));
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut i = 0;
    while i < b.len() {
        let rest = &text[i..];
        let end = if rest.starts_with("//") {
            rest.find('\n').unwrap_or(rest.len())
        } else if rest.starts_with("/*") {
            let mut depth = 0;
            let mut j = 0;
            loop {
                if rest[j..].starts_with("/*") {
                    depth += 1;
                    j += 2;
                } else if rest[j..].starts_with("*/") {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break j;
                    }
                } else if j >= rest.len() {
                    break rest.len();
                } else {
                    j += rest[j..].chars().next().map_or(1, char::len_utf8);
                }
            }
        } else if (rest.starts_with("r#") || rest.starts_with("r\"")) && (i == 0 || !ident(b[i - 1])) {
            let hashes = rest[1..].bytes().take_while(|&c| c == b'#').count();
            if rest.as_bytes().get(1 + hashes) != Some(&b'"') {
                0
            } else {
                let close = format!("\"{}", "#".repeat(hashes));
                rest[2 + hashes..].find(&close).map_or(rest.len(), |k| 2 + hashes + k + close.len())
            }
        } else if rest.starts_with('"') {
            let mut j = 1;
            while j < rest.len() && rest.as_bytes()[j] != b'"' {
                j += if rest.as_bytes()[j] == b'\\' { 2 } else { 1 };
            }
            (j + 1).min(rest.len())
        } else if let Some(after) = rest.strip_prefix('\'') {
            // A char literal ('x', '\n', '\u{..}'), not a lifetime ('a).
            if after.starts_with('\\') {
                after.get(2..).and_then(|r| r.find('\'')).map_or(1, |k| k + 4)
            } else {
                let c = after.chars().next().map_or(0, char::len_utf8);
                if after[c..].starts_with('\'') { c + 2 } else { 0 }
            }
        } else {
            0
        };
        if end == 0 {
            let c = rest.chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        } else {
            blank(&mut out, &rest[..end]);
            i += end;
        }
    }
    out
}

/// The top-level modules that `code` (of a file `depth` modules below the
/// root: 0 for `main.rs`, 1 for `a/mod.rs`, 2 for `a/b.rs`) names from the
/// crate root, each with its byte offset.
fn root_paths(code: &str, depth: usize) -> Vec<(usize, String)> {
    let ident_char = |c: char| c.is_alphanumeric() || c == '_';
    let ident = |s: &str| s.chars().take_while(|&c| ident_char(c)).collect::<String>();
    let mut found = Vec::new();
    let push_group = |at: usize, rest: &str, found: &mut Vec<(usize, String)>| {
        let rest = rest.trim_start();
        let Some(group) = rest.strip_prefix('{') else {
            found.push((at, ident(rest)));
            return;
        };
        let (mut nest, mut start) = (0usize, 0usize);
        for (j, c) in group.char_indices() {
            match c {
                '{' => nest += 1,
                '}' if nest == 0 => {
                    found.push((at, ident(group[start..j].trim_start())));
                    break;
                }
                '}' => nest -= 1,
                ',' if nest == 0 => {
                    found.push((at, ident(group[start..j].trim_start())));
                    start = j + 1;
                }
                _ => {}
            }
        }
    };
    let starts_token = |i: usize| !code[..i].ends_with(ident_char);
    for (i, _) in code.match_indices("crate::") {
        if starts_token(i) {
            push_group(i, &code[i + "crate::".len()..], &mut found);
        }
    }
    let inline = inline_modules(code);
    for (i, _) in code.match_indices("super::") {
        if !starts_token(i) || code[..i].ends_with("::") {
            continue;
        }
        let mut rest = &code[i..];
        let mut up = 0;
        while let Some(r) = rest.strip_prefix("super::") {
            up += 1;
            rest = r.trim_start();
        }
        if up >= depth + inline.iter().filter(|m| m.contains(&i)).count() {
            push_group(i, rest, &mut found);
        }
    }
    for mac in ["print!", "println!"] {
        for (i, _) in code.match_indices(mac) {
            if starts_token(i) && !code[..i].ends_with("::") && !code[..i].trim_end().ends_with("macro_rules!") {
                found.push((i, mac.trim_end_matches('!').to_string()));
            }
        }
    }
    found.retain(|(_, m)| !m.is_empty() && m != "self");
    found
}

/// The byte ranges of the inline modules (`mod name { .. }`) of `code`,
/// which `super::` inside them climbs out of first.
fn inline_modules(code: &str) -> Vec<std::ops::Range<usize>> {
    let ident_char = |c: char| c.is_alphanumeric() || c == '_';
    let mut spans = Vec::new();
    for (i, _) in code.match_indices("mod ") {
        if code[..i].ends_with(ident_char) {
            continue;
        }
        let rest = code[i + 4..].trim_start();
        let rest = rest.trim_start_matches(ident_char).trim_start();
        if !rest.starts_with('{') {
            continue;
        }
        let open = code.len() - rest.len();
        let mut nest = 0usize;
        for (j, c) in code[open..].char_indices() {
            match c {
                '{' => nest += 1,
                '}' => {
                    nest -= 1;
                    if nest == 0 {
                        spans.push(open..open + j);
                        break;
                    }
                }
                _ => {}
            }
        }
    }
    spans
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset].matches('\n').count() + 1
}

/// The `unsafe` keywords of `code`, by byte offset.
fn unsafe_uses(code: &str) -> Vec<usize> {
    let ident_char = |c: char| c.is_alphanumeric() || c == '_';
    code.match_indices("unsafe")
        .map(|(i, _)| i)
        .filter(|&i| !code[..i].ends_with(ident_char) && !code[i + "unsafe".len()..].starts_with(ident_char))
        .collect()
}

/// Module depth of the file at `rel`: 0 for `main.rs`, 1 for `a/mod.rs`,
/// 2 for `a/b.rs`.
fn depth(rel: &str) -> usize {
    let parts = rel.split('/').count();
    if rel.ends_with("/mod.rs") || rel == "main.rs" { parts - 1 } else { parts }
}

/// What is wrong with the file at `rel` whose source is `text`: one line
/// each, naming the file and line.
fn violations(rel: &str, text: &str) -> Vec<String> {
    let layer = match layer_of_file(rel) {
        Ok(l) => l,
        Err(e) => return vec![e],
    };
    let name = LAYERS[layer].0;
    let code = code(text);
    let mut bad = Vec::new();
    for (at, module) in root_paths(&code, depth(rel)) {
        let line = line_of(&code, at);
        match layer_of_module(&module) {
            Some(l) if l > layer => bad.push(format!(
                "guest/src/{rel}:{line}: {name}/ imports crate::{module}, which is in {}/, a layer above it",
                LAYERS[l].0
            )),
            Some(_) => {}
            None => bad.push(format!("guest/src/{rel}:{line}: crate::{module} is in no layer")),
        }
    }
    let allowed = LAYERS[layer].1 || UNSAFE_FILES.iter().any(|(f, _)| *f == rel);
    if !allowed {
        let layers: Vec<&str> = LAYERS.iter().filter(|l| l.1).map(|l| l.0).collect();
        for at in unsafe_uses(&code) {
            bad.push(format!(
                "guest/src/{rel}:{}: `unsafe` in {name}/, which may not hold it (only {}/, and the files \
                 named in UNSAFE_FILES): move the raw access down behind a safe function",
                line_of(&code, at),
                layers.join("/, ")
            ));
        }
    }
    bad.dedup();
    bad
}

/// Every `.rs` file below `dir`, sorted.
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

fn guest_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest/src")
}

#[test]
fn the_guest_imports_nothing_above_its_layer_and_keeps_unsafe_where_allowed() {
    let src = guest_src();
    let mut files = Vec::new();
    sources(&src, &mut files);
    assert!(files.len() > 60, "read only {} source files under {}", files.len(), src.display());
    let mut bad = Vec::new();
    let mut rels = Vec::new();
    for path in &files {
        let rel = path.strip_prefix(&src).unwrap().to_string_lossy().replace('\\', "/");
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        bad.extend(violations(&rel, &text));
        rels.push((rel, text));
    }
    for (file, why) in UNSAFE_FILES {
        match rels.iter().find(|(r, _)| r == file) {
            None => bad.push(format!("UNSAFE_FILES names guest/src/{file}, which does not exist ({why})")),
            Some((_, text)) if unsafe_uses(&code(text)).is_empty() => {
                bad.push(format!("UNSAFE_FILES names guest/src/{file}, which holds no `unsafe` now: drop it"))
            }
            Some(_) => {}
        }
    }
    for (layer, _) in LAYERS {
        if !src.join(layer).is_dir() {
            bad.push(format!("layer {layer}/ has no folder under guest/src"));
        }
    }
    assert!(
        bad.is_empty(),
        "the guest's layers (docs/ARCHITECTURE.md, \"Guest layering\"; a lower layer that must run an upper \
         one's code takes a function pointer from it):\n  {}",
        bad.join("\n  ")
    );
}

#[test]
fn the_architecture_document_lists_the_same_layers_in_the_same_order() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/ARCHITECTURE.md");
    let doc = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let start = doc.find("### Guest layering").expect("docs/ARCHITECTURE.md has a \"Guest layering\" section");
    let section = &doc[start..];
    let section = &section[..section[3..].find("\n#").map_or(section.len(), |e| e + 3)];
    // Each layer is one numbered item that opens with its folder: "3. `hv/`".
    let listed: Vec<&str> = section
        .lines()
        .filter_map(|l| {
            let (n, rest) = l.split_once(". `")?;
            n.parse::<u32>().ok()?;
            rest.split_once("/`").map(|(folder, _)| folder)
        })
        .collect();
    let layers: Vec<&str> = LAYERS.iter().map(|l| l.0).collect();
    assert_eq!(listed, layers, "docs/ARCHITECTURE.md's \"Guest layering\" and this test's LAYERS disagree");
}

#[test]
fn the_check_sees_paths_groups_super_and_macros_but_not_comments_or_strings() {
    let m = |code_text: &str, depth: usize| -> Vec<String> {
        root_paths(&code(code_text), depth).into_iter().map(|(_, m)| m).collect()
    };
    assert_eq!(m("use crate::{hv::console, sched::{self, x}, sync};", 2), ["hv", "sched", "sync"]);
    assert_eq!(m("$crate::hv::console::print(a); my_crate::diag", 2), ["hv"]);
    assert_eq!(m("use super::super::diag::costs; use super::x;", 2), ["diag"]);
    assert_eq!(m("use super::diag;", 1), ["diag"], "super:: of a mod.rs is the root");
    assert_eq!(m("mod t {\n    use super::super::x;\n}\nuse super::super::y;", 2), ["y"], "inline modules");
    assert_eq!(m("println!(\"crate::diag\"); // crate::switch\n/* crate::irq */", 2), ["println"]);
    assert_eq!(m("let c = '\"'; crate::mm::x(); let s = r#\"crate::boot\"#;", 2), ["mm"]);
    assert_eq!(m("fn f<'a>(x: &'a u8) { crate::hv::y() }", 2), ["hv"]);
    assert_eq!(m("let q = ['\\'', '\\n', '\\u{22}', '\"']; crate::sync::x();", 2), ["sync"]);

    assert!(violations("arch/trap.rs", "crate::hv::console::print_panic(x);")[0].contains("arch/trap.rs:1"));
    assert!(violations("arch/trap.rs", "fn f() {\n    println!(\"x\");\n}")[0].contains(":2: arch/ imports"));
    assert!(violations("sched/timer.rs", "crate::diag::costs::x();").iter().any(|v| v.contains("diag/")));
    assert!(violations("sched/timer.rs", "use crate::{arch::cpu, hv::boot_info, sched::x};").is_empty());
    assert!(violations("boot/smp.rs", "use crate::switch::control;").is_empty());
    assert!(violations("main.rs", "use crate::irq::dispatch;").is_empty());
    assert!(violations("stray.rs", "").iter().any(|v| v.contains("in no layer")));
    assert!(violations("sync/rt.rs", "crate::nowhere::x()").iter().any(|v| v.contains("is in no layer")));

    assert!(
        violations("workload/load.rs", "let x = unsafe { *p };").iter().any(|v| v.contains("`unsafe` in workload/"))
    );
    assert!(violations("workload/load.rs", "// unsafe\nlet s = \"unsafe\"; let unsafe_x = 1;").is_empty());
    assert!(violations("workload/telemetry.rs", "unsafe { *p }").is_empty(), "named in UNSAFE_FILES");
    assert!(violations("sched/task.rs", "unsafe impl Sync for T {}").is_empty());
    assert!(violations("logic/pi.rs", "#[unsafe(no_mangle)] fn f() {}").iter().any(|v| v.contains("logic/")));
}
