//! The docs stay true: what can be generated from the code is generated
//! here and compared with the committed copy, and what is written by hand
//! is checked against the code's own tables where it names them.
//!
//! - `docs/cli.md` is every subcommand's `--help`, rendered from the clap
//!   definitions of the `rtswitch` command (`rtswitch_tools::app::Cli`);
//! - generated blocks (`<!-- BEGIN GENERATED name -->` ..
//!   `<!-- END GENERATED name -->`): the QMP command list and limits in
//!   `docs/qmp.md` (`vmm/src/api/`), the guest arguments in
//!   `docs/usage.md` (`switcher::cmdline::KEYS`);
//! - hand-written tables checked against the code: the QMP command table
//!   and `SHUTDOWN` reasons, both exit-code tables, the schema versions of
//!   the run report and `bench.json`, the test-file table of
//!   `docs/testing.md`; the call-site counts in the real outputs shown,
//!   against the embedded guest kernel;
//! - every relative link of the README and `docs/` resolves (file and
//!   `#anchor`), no doc retells history (`issue N`) or points outside the
//!   repository (`../shared/`), the README stays short and its test
//!   command is the one CI runs.
//!
//! `RTSWITCH_REGENERATE_DOCS=1 cargo test --release -p rtswitch-tests --test docs`
//! rewrites the generated parts instead of failing on them.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use clap::CommandFactory;
use rtswitch::api::ctl::CtlExit;
use rtswitch::api::protocol::{self, COMMANDS, ShutdownCause, SiteCounts};
use rtswitch::api::{framing, server};
use rtswitch::exit_code::ExitCode;
use switcher::cmdline::{KEYS, Takes};

const REGENERATE: &str = "RTSWITCH_REGENERATE_DOCS=1 cargo test --release -p rtswitch-tests --test docs";

/// The README's limit: what rtswitch is, its two commands, what a run
/// prints and where to read on (about 200 lines); the rest is in docs/.
const README_MAX_LINES: usize = 250;

/// The README's two set-up commands: build, boot and measure; the tests.
const RUN_COMMAND: &str = "cargo run --release -- run --vcpus 2 --duration 2";
const TEST_COMMAND: &str = "cargo test --workspace --release";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace root").to_path_buf()
}

fn read(rel: &str) -> String {
    let path = root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn regenerating() -> bool {
    std::env::var_os("RTSWITCH_REGENERATE_DOCS").is_some_and(|v| v == "1")
}

/// The first line where `committed` and `generated` differ, for the
/// failure message.
fn first_difference(committed: &str, generated: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (committed.lines().collect(), generated.lines().collect());
    for i in 0..a.len().max(b.len()) {
        let (x, y) = (a.get(i).copied(), b.get(i).copied());
        if x != y {
            return format!(
                "line {}:\n  committed: {}\n  generated: {}",
                i + 1,
                x.unwrap_or("(end of file)"),
                y.unwrap_or("(end of file)")
            );
        }
    }
    "(only line endings differ)".into()
}

/// Compares a committed file with what the code generates; rewrites it
/// under `RTSWITCH_REGENERATE_DOCS=1`.
fn check_or_write(rel: &str, generated: &str) {
    let path = root().join(rel);
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed == generated {
        return;
    }
    if regenerating() {
        std::fs::write(&path, generated).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        eprintln!("docs: rewrote {rel}");
        return;
    }
    panic!(
        "{rel} is out of date with the code ({}); regenerate it with\n  {REGENERATE}\nand commit the result",
        first_difference(&committed, generated)
    );
}

/// `text` with the block named `name` replaced by `body`.
fn with_block(rel: &str, text: &str, name: &str, body: &str) -> String {
    let begin = format!("<!-- BEGIN GENERATED {name} -->\n");
    let end = format!("<!-- END GENERATED {name} -->");
    let start = text.find(&begin).unwrap_or_else(|| panic!("{rel} has no line `{}`", begin.trim_end())) + begin.len();
    let stop = start + text[start..].find(&end).unwrap_or_else(|| panic!("{rel} has no line `{end}` after its BEGIN"));
    format!("{}{body}{}", &text[..start], &text[stop..])
}

// ---------------------------------------------------------------------------
// docs/cli.md: the --help texts, from the clap definitions of `rtswitch`.

/// `--help` of `cmd` as clap renders it (no colour), trailing blanks cut.
fn long_help(cmd: &mut clap::Command) -> String {
    let text = cmd.render_long_help().to_string();
    let mut lines: Vec<&str> = text.lines().map(str::trim_end).collect();
    while lines.last() == Some(&"") {
        lines.pop();
    }
    lines.join("\n")
}

/// Appends the help of `cmd` (named `title`) and then of its subcommands,
/// depth first, in the order clap lists them (its own `help` left out).
fn write_help_tree(doc: &mut String, title: &str, cmd: &mut clap::Command) {
    let _ = write!(doc, "\n## {title}\n\n```text\n{}\n```\n", long_help(cmd));
    for sub in cmd.get_subcommands_mut().filter(|s| s.get_name() != "help") {
        let title = format!("{title} {}", sub.get_name());
        write_help_tree(doc, &title, sub);
    }
}

fn generate_cli_md() -> String {
    let mut doc = String::from(
        "# Command-line reference\n\n\
         Every `--help` text of the `rtswitch` command, generated by `tests/tests/docs.rs`\n\
         from its clap definitions (`tools/src/app.rs`, `vmm/src/cli.rs`,\n\
         `tools/src/bench/`, `tools/src/stress.rs`). Do not edit: the test fails when this\n\
         file and the code disagree. Regenerate it with\n\n\
         ```sh\n",
    );
    let _ = write!(doc, "{REGENERATE}\n```\n\nHow the commands fit together: [`usage.md`](usage.md).\n");
    let mut cli = rtswitch_tools::app::Cli::command();
    // Sets every subcommand's full name ("rtswitch ctl mode") for its usage line.
    cli.build();
    write_help_tree(&mut doc, "rtswitch", &mut cli);
    doc
}

#[test]
fn cli_reference_is_the_commands_help() {
    let generated = generate_cli_md();
    for sub in ["## rtswitch run\n", "## rtswitch ctl mode\n", "## rtswitch bench\n", "## rtswitch stress\n"] {
        assert!(generated.contains(sub), "the walk of the subcommands missed `{}`", sub.trim());
    }
    check_or_write("docs/cli.md", &generated);
}

#[test]
fn cli_reference_is_what_the_binary_prints() {
    // The generated page is clap's rendering; the binary must print the
    // same (no wrapping to the terminal, no colour).
    let out = Command::new(rtswitch_tests::rtswitch_bin())
        .args(["ctl", "mode", "--help"])
        .env("NO_COLOR", "1")
        .env_remove("CLICOLOR_FORCE")
        .output()
        .expect("the rtswitch binary runs");
    assert!(out.status.success(), "rtswitch ctl mode --help failed: {}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8_lossy(&out.stdout);
    let printed: Vec<&str> = printed.lines().map(str::trim_end).collect();
    let mut cli = rtswitch_tools::app::Cli::command();
    cli.build();
    let ctl = cli.find_subcommand_mut("ctl").expect("ctl");
    let mode = ctl.find_subcommand_mut("mode").expect("ctl mode");
    assert_eq!(printed.join("\n").trim_end(), long_help(mode));
}

// ---------------------------------------------------------------------------
// Generated blocks.

fn bytes(n: usize) -> String {
    if n.is_multiple_of(1024 * 1024) {
        format!("{n} bytes ({} MiB)", n / (1024 * 1024))
    } else if n.is_multiple_of(1024) {
        format!("{n} bytes ({} KiB)", n / 1024)
    } else {
        format!("{n} bytes")
    }
}

fn seconds(d: Duration) -> String {
    format!("{} s", d.as_secs_f64())
}

fn qmp_commands_block() -> String {
    let names: Vec<String> = COMMANDS.iter().map(|c| format!("`{c}`")).collect();
    format!("{}.\n", names.join(", "))
}

fn qmp_limits_block() -> String {
    let rows: [(&str, String, &str); 10] = [
        ("a request, at most", bytes(framing::MAX_MESSAGE_BYTES), "framing::MAX_MESSAGE_BYTES"),
        ("a request's nesting, at most", format!("{} levels", framing::MAX_NESTING), "framing::MAX_NESTING"),
        ("a reply, at most", bytes(protocol::MAX_REPLY_BYTES), "protocol::MAX_REPLY_BYTES"),
        ("clients connected at once", server::MAX_CLIENTS.to_string(), "server::MAX_CLIENTS"),
        ("time to negotiate after connecting", seconds(server::NEGOTIATION_DEADLINE), "server::NEGOTIATION_DEADLINE"),
        ("bytes read from a client per turn", bytes(server::READ_BUDGET), "server::READ_BUDGET"),
        (
            "messages handled per client and turn",
            server::MESSAGES_PER_WAKEUP.to_string(),
            "server::MESSAGES_PER_WAKEUP",
        ),
        ("unread output queued for a client", bytes(server::MAX_OUTBOX_BYTES), "server::MAX_OUTBOX_BYTES"),
        (
            "`query-switches` page: default / largest",
            format!("{} / {} switches", protocol::SWITCH_PAGE.default, protocol::SWITCH_PAGE.max),
            "protocol::SWITCH_PAGE",
        ),
        (
            "`query-latency` page: default / largest",
            format!("{} / {} epochs", protocol::EPOCH_PAGE.default, protocol::EPOCH_PAGE.max),
            "protocol::EPOCH_PAGE",
        ),
    ];
    let mut t = String::from("| limit | value | constant (`vmm/src/api/`) |\n|---|---|---|\n");
    for (what, value, constant) in rows {
        let _ = writeln!(t, "| {what} | {value} | `{constant}` |");
    }
    t
}

fn guest_args_block() -> String {
    let mut t = String::from("| word | what it does |\n|---|---|\n");
    for k in KEYS {
        let word = match k.takes {
            Takes::Nothing => k.name.to_string(),
            Takes::Number { unit } => format!("{}={unit}", k.name),
            // A `|` inside a table cell must be escaped, even in code.
            Takes::OneOf(words) => format!("{}={}", k.name, words.join("\\|")),
        };
        let _ = writeln!(t, "| `{word}` | {} |", k.help);
    }
    t
}

#[test]
fn generated_blocks_match_the_code() {
    let qmp = read("docs/qmp.md");
    let qmp_new = with_block("docs/qmp.md", &qmp, "qmp-commands", &qmp_commands_block());
    let qmp_new = with_block("docs/qmp.md", &qmp_new, "qmp-limits", &qmp_limits_block());
    check_or_write("docs/qmp.md", &qmp_new);
    let usage = read("docs/usage.md");
    check_or_write("docs/usage.md", &with_block("docs/usage.md", &usage, "guest-args", &guest_args_block()));
}

// ---------------------------------------------------------------------------
// Hand-written tables, checked against the code's own.

/// The rows of the first table after the line `after` (a heading or a
/// table's header row), each as its cells, trimmed.
fn table_after(rel: &str, text: &str, after: &str) -> Vec<Vec<String>> {
    let start = text.find(after).unwrap_or_else(|| panic!("{rel}: no `{after}`"));
    text[start..]
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2) // header and separator
        .map(|l| l.trim_matches('|').split(" | ").map(|c| c.trim().to_string()).collect())
        .collect()
}

fn unquote(cell: &str) -> &str {
    cell.trim_matches('`')
}

#[test]
fn qmp_command_table_has_one_row_per_command_in_order() {
    let doc = read("docs/qmp.md");
    let rows = table_after("docs/qmp.md", &doc, "| command | arguments | reply");
    let documented: Vec<&str> = rows.iter().map(|r| unquote(&r[0])).collect();
    assert_eq!(
        documented, COMMANDS,
        "docs/qmp.md's command table must have one row per command of COMMANDS (vmm/src/api/protocol.rs), in its \
         order: add, remove or move rows by hand"
    );
}

#[test]
fn shutdown_reasons_match_the_protocol() {
    let doc = read("docs/qmp.md");
    let rows = table_after("docs/qmp.md", &doc, "| `reason` | `guest` | when |");
    let documented: Vec<(String, String)> = rows.iter().map(|r| (unquote(&r[0]).to_string(), r[1].clone())).collect();
    let code: Vec<(String, String)> =
        ShutdownCause::ALL.iter().map(|c| (c.as_str().to_string(), c.by_guest().to_string())).collect();
    assert_eq!(
        documented, code,
        "docs/qmp.md's SHUTDOWN table (reason, guest) must list ShutdownCause::ALL (vmm/src/api/protocol.rs) in order"
    );
}

#[test]
fn exit_code_tables_match_the_enums() {
    let doc = read("docs/usage.md");
    let cells = |rows: Vec<Vec<String>>| -> BTreeSet<(u8, String)> {
        rows.iter()
            .map(|r| {
                (r[0].parse().unwrap_or_else(|_| panic!("docs/usage.md: exit code `{}`", r[0])), unquote(&r[1]).into())
            })
            .collect()
    };
    let run = cells(table_after("docs/usage.md", &doc, "## Exit codes"));
    let want: BTreeSet<(u8, String)> = ExitCode::ALL.iter().map(|c| (c.code(), format!("{c:?}"))).collect();
    assert_eq!(run, want, "docs/usage.md's exit codes of `rtswitch` must be ExitCode::ALL (vmm/src/exit_code.rs)");
    let ctl = cells(table_after("docs/usage.md", &doc, "`rtswitch ctl` has exit codes of its own"));
    let want: BTreeSet<(u8, String)> = CtlExit::ALL.iter().map(|c| (c.code(), format!("{c:?}"))).collect();
    assert_eq!(ctl, want, "docs/usage.md's exit codes of `rtswitch ctl` must be CtlExit::ALL (vmm/src/api/ctl.rs)");
}

#[test]
fn schema_versions_are_the_writers() {
    let reports = read("docs/reports.md");
    let v = rtswitch::report::json::SCHEMA_VERSION;
    for needle in [format!("## `--json FILE` (schema_version {v})"), format!("| `schema_version` | int | {v};")] {
        assert!(
            reports.contains(&needle),
            "docs/reports.md must say `{needle}` (SCHEMA_VERSION in vmm/src/report/json.rs)"
        );
    }
    let bench = read("docs/bench-json.md");
    let v = rtswitch_tools::bench::BENCH_JSON_VERSION;
    for needle in [format!("# `bench.json` (bench_version {v})"), format!("| `bench_version` | int | {v} |")] {
        assert!(
            bench.contains(&needle),
            "docs/bench-json.md must say `{needle}` (BENCH_JSON_VERSION in tools/src/bench/mod.rs)"
        );
    }
}

#[test]
fn testing_md_names_every_end_to_end_test_file() {
    let doc = read("docs/testing.md");
    let documented: BTreeSet<String> = table_after("docs/testing.md", &doc, "| file | what it checks |")
        .iter()
        .map(|r| unquote(&r[0]).into())
        .collect();
    let files: BTreeSet<String> = std::fs::read_dir(root().join("tests/tests"))
        .expect("tests/tests")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".rs"))
        .collect();
    assert_eq!(
        documented, files,
        "docs/testing.md's table of end-to-end test files must name each file of tests/tests/ once: add a row for a new \
         file, remove the row of a removed one"
    );
}

// ---------------------------------------------------------------------------
// Real outputs shown in the docs, against the kernel they came from.

/// The digits that end `text` (`"... 261 "` -> 261), blanks ignored.
fn number_before(text: &str) -> Option<u64> {
    let t = text.trim_end();
    let start = t.rfind(|c: char| !c.is_ascii_digit()).map_or(0, |i| i + 1);
    t[start..].parse().ok()
}

/// The digits at the start of `text`.
fn number_after(text: &str) -> Option<u64> {
    let end = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    text[..end].parse().ok()
}

/// Every place in `text` that states the kernel's call sites, as
/// `(what it says, what the kernel has)` where they differ.
fn site_count_mismatches(text: &str, want: SiteCounts) -> Vec<(String, String)> {
    // Prose wraps lines anywhere.
    let text = &text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut bad = Vec::new();
    let by_dimension = format!("({})", want.by_dimension());
    // Console and ctl lines: `N call sites [verified|patched] (A lock, B preemption, C interrupt dispatch)`.
    let mut from = 0;
    while let Some(i) = text[from..].find(" interrupt dispatch)") {
        let end = from + i + " interrupt dispatch)".len();
        let open = text[..end].rfind('(').unwrap_or(0);
        from = end;
        if !text[open + 1..].starts_with(|c: char| c.is_ascii_digit()) {
            continue; // prose that names the kinds, not a count
        }
        if text[open..end] != by_dimension {
            bad.push((text[open..end].to_string(), by_dimension.clone()));
        }
        let before = &text[..open];
        let sites = before.rfind("call sites").map(|j| &before[..j]);
        if let Some(n) = sites.and_then(number_before).filter(|&n| n != want.total()) {
            bad.push((format!("{n} call sites"), format!("{} call sites", want.total())));
        }
    }
    // QMP replies.
    let dims = format!(
        "\"sites_by_dimension\":{{\"irq\":{},\"locks\":{},\"preempt\":{}}}",
        want.irq, want.locks, want.preempt
    );
    for (i, _) in text.match_indices("\"sites_by_dimension\":{") {
        let end = i + text[i..].find('}').map_or(text.len() - i, |j| j + 1);
        if text[i..end] != dims {
            bad.push((text[i..end].to_string(), dims.clone()));
        }
    }
    for key in ["\"sites\":", "\"sites_patched\":"] {
        for (i, _) in text.match_indices(key) {
            // A failed switch patched nothing.
            let failed = key == "\"sites_patched\":";
            let wrong = |&n: &u64| n != want.total() && !(failed && n == 0);
            if let Some(n) = number_after(&text[i + key.len()..]).filter(wrong) {
                bad.push((format!("{key}{n}"), format!("{key}{}", want.total())));
            }
        }
    }
    bad
}

/// The outputs shown are real; the call sites they count must be the
/// embedded kernel's. `benchmarks.md` is left out: it records one run at a
/// named commit.
#[test]
fn shown_call_site_counts_are_the_embedded_kernels() {
    let kernel = rtswitch::loader::parse(rtswitch::DEFAULT_KERNEL, rtswitch::limits::DEFAULT_MEMORY_MIB << 20)
        .expect("the embedded kernel parses");
    let want = SiteCounts::of(&kernel.sites);
    let mut bad = Vec::new();
    for rel in doc_files().into_iter().filter(|f| f != "docs/benchmarks.md") {
        for (says, has) in site_count_mismatches(&read(&rel), want) {
            bad.push(format!("{rel}: `{says}`, the embedded kernel: `{has}`"));
        }
    }
    assert!(
        bad.is_empty(),
        "outputs in the docs count other call sites than the embedded guest kernel has; run the example again and \
         paste its output:\n  {}",
        bad.join("\n  ")
    );
}

// ---------------------------------------------------------------------------
// Links, history, length.

/// The README and every page under docs/ (not docs/results/).
fn doc_files() -> Vec<String> {
    let mut files = vec!["README.md".to_string()];
    let mut pages: Vec<String> = std::fs::read_dir(root().join("docs"))
        .expect("docs/")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".md"))
        .map(|n| format!("docs/{n}"))
        .collect();
    pages.sort();
    files.extend(pages);
    files
}

/// The text outside fenced code blocks.
fn prose(text: &str) -> String {
    let mut out = String::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces
/// to hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for line in prose(text).lines() {
        let Some(title) = line.strip_prefix('#').map(|t| t.trim_start_matches('#')) else { continue };
        if !title.starts_with(' ') {
            continue;
        }
        let base = slug(title);
        let mut anchor = base.clone();
        let mut n = 0;
        while seen.contains(&anchor) {
            n += 1;
            anchor = format!("{base}-{n}");
        }
        seen.insert(anchor);
    }
    seen
}

/// The targets of the inline links `[text](target)` and images in `text`'s
/// prose.
fn links(text: &str) -> Vec<String> {
    let prose = prose(text);
    let mut out = Vec::new();
    let mut rest = prose.as_str();
    while let Some(i) = rest.find("](") {
        rest = &rest[i + 2..];
        if let Some(end) = rest.find(')') {
            out.push(rest[..end].to_string());
            rest = &rest[end..];
        }
    }
    out
}

#[test]
fn every_relative_link_resolves() {
    let mut broken = Vec::new();
    for rel in doc_files() {
        let text = read(&rel);
        let dir = Path::new(&rel).parent().unwrap_or(Path::new("")).to_path_buf();
        for target in links(&text) {
            if target.starts_with("http://") || target.starts_with("https://") || target.starts_with("mailto:") {
                continue;
            }
            let (file, anchor) = target.split_once('#').map_or((target.as_str(), None), |(f, a)| (f, Some(a)));
            let path = if file.is_empty() { PathBuf::from(&rel) } else { dir.join(file) };
            if !root().join(&path).exists() {
                broken.push(format!("{rel}: ({target}): {} does not exist", path.display()));
                continue;
            }
            if let Some(anchor) = anchor {
                let page = std::fs::read_to_string(root().join(&path)).unwrap_or_default();
                if !anchors(&page).contains(anchor) {
                    broken.push(format!("{rel}: ({target}): {} has no heading #{anchor}", path.display()));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n  {}", broken.join("\n  "));
}

/// Whether `text` names an issue by number: the word, singular or
/// plural, then a number, with or without `#`.
fn names_an_issue(text: &str) -> Option<String> {
    let lower = text.to_lowercase();
    let mut from = 0;
    while let Some(i) = lower[from..].find("issue") {
        let at = from + i;
        let rest = lower[at + 5..].trim_start_matches('s').trim_start_matches(' ').trim_start_matches('#');
        if rest.starts_with(|c: char| c.is_ascii_digit()) {
            let line_start = lower[..at].rfind('\n').map_or(0, |n| n + 1);
            let line_end = lower[at..].find('\n').map_or(lower.len(), |n| at + n);
            return Some(text[line_start..line_end].to_string());
        }
        from = at + 5;
    }
    None
}

#[test]
fn docs_tell_no_history_and_stay_inside_the_repository() {
    for rel in doc_files() {
        let text = read(&rel);
        if let Some(line) = names_an_issue(&text) {
            panic!("{rel} names an issue by number (history belongs to git): {line}");
        }
        assert!(!text.contains("../shared"), "{rel} points at ../shared/, outside the repository");
    }
}

#[test]
fn readme_is_short_and_its_commands_are_cis() {
    let readme = read("README.md");
    let lines = readme.lines().count();
    assert!(
        lines <= README_MAX_LINES,
        "README.md has {lines} lines, more than {README_MAX_LINES}: move detail to docs/"
    );
    for command in [RUN_COMMAND, TEST_COMMAND] {
        assert!(
            readme.lines().any(|l| l.trim() == command),
            "README.md must give the set-up command `{command}` on a line of its own"
        );
    }
    // CI and the busy-machine script run the very line the README gives.
    for script in [".ci/run", "tests/busy-machine.sh"] {
        let text = read(script);
        assert!(
            text.lines().any(|l| l.trim() == TEST_COMMAND || l.trim().starts_with(&format!("{TEST_COMMAND} >"))),
            "{script} must run the README's test command `{TEST_COMMAND}`"
        );
    }
}

#[test]
fn the_checks_catch_what_they_look_for() {
    assert_eq!(slug("`--json FILE` (schema_version 2)"), "--json-file-schema_version-2");
    assert_eq!(slug("Which epochs, which file: `--histogram-mode`"), "which-epochs-which-file---histogram-mode");
    // Spelled in pieces, so that a search of the sources for history
    // does not find these lines.
    let word = "issue";
    assert!(names_an_issue(&format!("as {word} 14 asked")).is_some());
    assert!(names_an_issue(&format!("{word}s 2-16")).is_some());
    assert!(names_an_issue(&format!("the {word} #7")).is_some());
    assert!(names_an_issue("no issues here; issued 3 times").is_none());
    assert_eq!(links("see [a](b.md#c) and ![p](results/x.svg)\n```\n[no](link)\n```\n"), ["b.md#c", "results/x.svg"]);
    let k = SiteCounts { locks: 2, preempt: 3, irq: 1 };
    assert!(site_count_mismatches("6 call sites patched (2 lock, 3 preemption, 1 interrupt dispatch)", k).is_empty());
    assert_eq!(site_count_mismatches("7 call sites (2 lock,\n3 preemption, 1 interrupt dispatch)", k).len(), 1);
    assert!(site_count_mismatches("the call sites (locks, preemption points, interrupt dispatch)", k).is_empty());
    assert_eq!(site_count_mismatches("6 call sites (2 lock, 4 preemption, 1 interrupt dispatch)", k).len(), 1);
    assert!(site_count_mismatches(r#"{"sites":6,"sites_by_dimension":{"irq":1,"locks":2,"preempt":3}}"#, k).is_empty());
    assert_eq!(
        site_count_mismatches(r#"{"sites_patched":5,"sites_by_dimension":{"irq":1,"locks":2,"preempt":2}}"#, k).len(),
        2
    );
    let block = with_block("x", "a\n<!-- BEGIN GENERATED n -->\nold\n<!-- END GENERATED n -->\nb\n", "n", "new\n");
    assert_eq!(block, "a\n<!-- BEGIN GENERATED n -->\nnew\n<!-- END GENERATED n -->\nb\n");
}
