//! Which cyclictest-format files a run writes, and the check of every
//! output path before the VM boots (docs/reports.md).
//!
//! **File naming rule** for `--histogram FILE` and `--cyclictest-json FILE`
//! (`--histogram-mode` selects for both):
//!
//! - `per-mode` (the default): one file per mode that ran at least one
//!   `Mode` epoch, merged over that mode's `Mode` epochs, switching epochs
//!   never included. When both modes ran, the mode's name goes before the
//!   extension (`h.txt` -> `h.mainline.txt` and `h.rt.txt`; `h` ->
//!   `h.mainline` and `h.rt`); when one mode ran, `FILE` itself;
//! - `mainline` or `rt`: `FILE` itself, that mode's `Mode` epochs merged (no
//!   samples when the mode never ran: the file says so by its zero counts,
//!   and stderr says it);
//! - `all`: `FILE` itself, every `Mode` epoch of both modes merged.
//!
//! **Path check.** Before the VM boots, every file the options may write
//! (for `per-mode`, `FILE` and the per-mode names of `mainline`, `rt` and
//! the profiles known at the start) is checked: its directory exists, it
//! is not a directory, and a file can be created beside it. `rtswitch run`
//! then keeps that file ([`prepare`]): a temporary file in the target's
//! directory, opened before the sandbox goes in and renamed over the target
//! at the end of the run (`crate::outfile`); the target's name itself is
//! never created, opened or removed before then, so nothing planted there
//! is followed or truncated, and a run that ends early leaves the target
//! as it was. A per-mode file of a profile first reached later (a client's
//! `set-mode`) cannot be written under the sandbox: the run says so. `--plot` must end in
//! `.svg` (the only format drawn). `--histogram` needs 1 µs buckets (its
//! row index is the latency in µs): it is refused with `--bucket-us` > 1.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use switcher::profile::Profile;

use super::Measurement;

/// The files a run writes besides its summary (the command line's output
/// options, as the runner passes them on).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OutputFiles {
    /// `--json`.
    pub json: Option<PathBuf>,
    /// `--histogram` (cyclictest -h format).
    pub histogram: Option<PathBuf>,
    /// `--histogram-mode`: which mode epochs `histogram` and
    /// `cyclictest_json` hold.
    pub histogram_mode: HistogramMode,
    /// `--histogram-irq`: IRQ-latency columns in `histogram`.
    pub histogram_irq: bool,
    /// `--cyclictest-json`.
    pub cyclictest_json: Option<PathBuf>,
    /// `--plot` (SVG).
    pub plot: Option<PathBuf>,
    /// `--plot-per-epoch`: a series per epoch instead of per mode.
    pub plot_per_epoch: bool,
    /// What draws `plot` (`None`: `--plot` fails to write).
    pub plotter: Option<super::Plotter>,
    /// Profiles the run is known to run in besides `mainline` and `rt`
    /// (its boot profile, `--switch-to`): their per-mode files are checked
    /// before the boot too.
    pub profiles: Vec<Profile>,
}

/// `--histogram-mode` values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum HistogramMode {
    /// One file per mode that ran (FILE itself when only one did).
    #[default]
    PerMode,
    /// Mainline's mode epochs only, into FILE.
    Mainline,
    /// rt's mode epochs only, into FILE.
    Rt,
    /// Every mode epoch of both modes merged, into FILE.
    All,
}

/// The samples one output file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Selection {
    /// The `Mode` epochs of one mode.
    Mode(Profile),
    /// The `Mode` epochs of both modes.
    All,
}

impl Selection {
    /// `Some(mode)` for one mode, `None` for both (as
    /// [`Measurement::per_cpu_mode`] takes it).
    pub fn mode(self) -> Option<Profile> {
        match self {
            Selection::Mode(m) => Some(m),
            Selection::All => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Selection::Mode(m) => m.name(),
            Selection::All => "all modes",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("{option} {path}: its directory {dir} does not exist; create it or name another path")]
    NoDirectory { option: &'static str, path: String, dir: String },
    #[error("{option} {path} is a directory; name a file")]
    IsDirectory { option: &'static str, path: String },
    #[error("{option} {path} cannot be written: {err}; check that its directory is writable")]
    NotWritable { option: &'static str, path: String, err: std::io::Error },
    #[error("--plot {path}: rtswitch draws SVG only; name the file with the .svg extension")]
    PlotFormat { path: String },
    #[error(
        "--histogram {path}: cyclictest's -h format has a row per µs, which --bucket-us {bucket_us} cannot fill; \
         use --bucket-us 1, or --cyclictest-json / --json, whose histograms name each bucket's lower edge"
    )]
    HistogramBuckets { path: String, bucket_us: u32 },
    #[error("{first} and {second} both name {path}; give each output its own file")]
    SamePath { first: &'static str, second: &'static str, path: String },
}

/// `base` with `.tag` before its extension (`h.txt` -> `h.rt.txt`; `h` ->
/// `h.rt`).
pub fn tagged(base: &Path, tag: &str) -> PathBuf {
    let stem = base.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let name = match base.extension() {
        Some(ext) => format!("{stem}.{tag}.{}", ext.to_string_lossy()),
        None => format!("{stem}.{tag}"),
    };
    base.with_file_name(name)
}

/// A profile's name as a file name part: `mainline`, `rt`, or
/// `locks-rt_preempt-full_irq-hard` (no `=` or `,` in file names).
pub fn file_tag(p: Profile) -> String {
    p.name().replace(',', "_").replace('=', "-")
}

/// The files to write for `base` under `mode`, given the modes that ran.
pub fn files(base: &Path, mode: HistogramMode, modes_run: &[Profile]) -> Vec<(PathBuf, Selection)> {
    match mode {
        HistogramMode::Mainline => vec![(base.to_path_buf(), Selection::Mode(Profile::MAINLINE))],
        HistogramMode::Rt => vec![(base.to_path_buf(), Selection::Mode(Profile::RT))],
        HistogramMode::All => vec![(base.to_path_buf(), Selection::All)],
        HistogramMode::PerMode => match modes_run {
            [] => vec![(base.to_path_buf(), Selection::All)],
            [one] => vec![(base.to_path_buf(), Selection::Mode(*one))],
            many => many.iter().map(|&m| (tagged(base, &file_tag(m)), Selection::Mode(m))).collect(),
        },
    }
}

/// The files of a finished run.
pub fn files_for(base: &Path, mode: HistogramMode, m: &Measurement) -> Vec<(PathBuf, Selection)> {
    files(base, mode, &m.modes_run())
}

/// Every path `base` may become (checked before the boot): per mode, the
/// files of `mainline`, `rt` and the `known` profiles. A profile a client
/// switches to later has its file checked when it is written.
fn candidates(base: &Path, mode: HistogramMode, known: &[Profile]) -> Vec<PathBuf> {
    match mode {
        HistogramMode::PerMode => {
            let mut v = vec![base.to_path_buf()];
            for p in [Profile::MAINLINE, Profile::RT].iter().chain(known) {
                let f = tagged(base, &file_tag(*p));
                if !v.contains(&f) {
                    v.push(f);
                }
            }
            v
        }
        _ => vec![base.to_path_buf()],
    }
}

/// Checks every output path before the VM boots and prepares its file
/// (`outfile::prepare`: the module comment): what `rtswitch run` calls.
pub fn prepare(out: &OutputFiles, bucket_us: u32) -> Result<(), OutputError> {
    for (option, path) in check(out, bucket_us)? {
        crate::outfile::prepare(&path).map_err(|err| OutputError::NotWritable {
            option,
            path: path.display().to_string(),
            err,
        })?;
    }
    Ok(())
}

/// Checks every output path (see the module comment), leaving nothing
/// behind; returns each with its option. `bucket_us` is the run's
/// histogram bucket width (`--bucket-us`).
pub fn check(out: &OutputFiles, bucket_us: u32) -> Result<Vec<(&'static str, PathBuf)>, OutputError> {
    if let Some(p) = &out.histogram
        && bucket_us > 1
    {
        return Err(OutputError::HistogramBuckets { path: p.display().to_string(), bucket_us });
    }
    if let Some(p) = &out.plot
        && !p.extension().is_some_and(|e| e.eq_ignore_ascii_case("svg"))
    {
        return Err(OutputError::PlotFormat { path: p.display().to_string() });
    }
    let mut named: Vec<(&'static str, PathBuf)> = Vec::new();
    for (option, path) in [("--json", &out.json), ("--plot", &out.plot)] {
        if let Some(p) = path {
            named.push((option, p.clone()));
        }
    }
    for (option, path) in [("--histogram", &out.histogram), ("--cyclictest-json", &out.cyclictest_json)] {
        if let Some(p) = path {
            named.extend(candidates(p, out.histogram_mode, &out.profiles).into_iter().map(|c| (option, c)));
        }
    }
    let mut seen: Vec<(&'static str, PathBuf)> = Vec::new();
    for (option, path) in &named {
        if let Some((first, _)) = seen.iter().find(|(o, p)| o != option && p == path) {
            return Err(OutputError::SamePath { first, second: option, path: path.display().to_string() });
        }
        seen.push((option, path.clone()));
    }
    let unique: BTreeSet<(&'static str, PathBuf)> = named.into_iter().collect();
    for (option, path) in &unique {
        probe(option, path)?;
    }
    Ok(unique.into_iter().collect())
}

/// Whether `path` can be written: a temporary file can be created beside
/// it (then removed); the name itself is not touched (`option` names the
/// path in the error). Also `rtswitch bench`'s check of its `--out` files
/// and `--json`.
pub fn probe(option: &'static str, path: &Path) -> Result<(), OutputError> {
    let shown = path.display().to_string();
    if path.is_dir() {
        return Err(OutputError::IsDirectory { option, path: shown });
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(OutputError::NoDirectory { option, path: shown, dir: dir.display().to_string() });
    }
    crate::outfile::Pending::create(path).map(drop).map_err(|err| OutputError::NotWritable { option, path: shown, err })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_known_profiles_files_are_checked_before_the_boot() {
        let p = Profile::parse("preempt=full").map_err(|e| e.0).unwrap();
        let c = candidates(Path::new("h.txt"), HistogramMode::PerMode, &[Profile::RT, p]);
        let names: Vec<String> = c.iter().map(|p| p.display().to_string()).collect();
        assert_eq!(names, ["h.txt", "h.mainline.txt", "h.rt.txt", "h.locks-mainline_preempt-full_irq-hard.txt"]);
        assert_eq!(candidates(Path::new("h.txt"), HistogramMode::All, &[p]), [PathBuf::from("h.txt")]);
    }

    #[test]
    fn profile_file_tags_are_plain_words() {
        assert_eq!(file_tag(Profile::MAINLINE), "mainline");
        assert_eq!(file_tag(Profile::RT), "rt");
        let p = Profile::parse("locks=rt,preempt=full").map_err(|e| e.0).unwrap();
        assert_eq!(file_tag(p), "locks-rt_preempt-full_irq-hard");
        let both = [Profile::MAINLINE, p];
        let f = files(Path::new("h.txt"), HistogramMode::PerMode, &both);
        assert_eq!(f[1].0, PathBuf::from("h.locks-rt_preempt-full_irq-hard.txt"));
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("rtswitch-outputs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn per_mode_names_go_before_the_extension() {
        assert_eq!(tagged(Path::new("/a/h.txt"), "rt"), PathBuf::from("/a/h.rt.txt"));
        assert_eq!(tagged(Path::new("h"), "mainline"), PathBuf::from("h.mainline"));
        assert_eq!(tagged(Path::new("d.x/h.tar.gz"), "rt"), PathBuf::from("d.x/h.tar.rt.gz"));
        let both = [Profile::MAINLINE, Profile::RT];
        let base = Path::new("h.txt");
        assert_eq!(
            files(base, HistogramMode::PerMode, &both),
            vec![
                (PathBuf::from("h.mainline.txt"), Selection::Mode(Profile::MAINLINE)),
                (PathBuf::from("h.rt.txt"), Selection::Mode(Profile::RT))
            ]
        );
        assert_eq!(
            files(base, HistogramMode::PerMode, &[Profile::RT]),
            vec![(PathBuf::from("h.txt"), Selection::Mode(Profile::RT))]
        );
        assert_eq!(files(base, HistogramMode::All, &both), vec![(PathBuf::from("h.txt"), Selection::All)]);
        assert_eq!(
            files(base, HistogramMode::Rt, &[Profile::MAINLINE]),
            vec![(PathBuf::from("h.txt"), Selection::Mode(Profile::RT))]
        );
    }

    #[test]
    fn paths_are_checked_without_leaving_files() {
        let dir = scratch("check");
        let h = dir.join("h.txt");
        let out = OutputFiles {
            histogram: Some(h.clone()),
            json: Some(dir.join("r.json")),
            plot: Some(dir.join("p.SVG")),
            cyclictest_json: Some(dir.join("c.json")),
            ..Default::default()
        };
        check(&out, 1).unwrap();
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "no file left behind");
        // An existing file is kept as it is.
        std::fs::write(&h, "keep").unwrap();
        check(&out, 1).unwrap();
        assert_eq!(std::fs::read_to_string(&h).unwrap(), "keep");

        let bad = OutputFiles { plot: Some(dir.join("p.png")), ..Default::default() };
        let e = check(&bad, 1).unwrap_err().to_string();
        assert!(e.contains("SVG only") && e.contains(".svg"), "{e}");
        let bad = OutputFiles { json: Some(dir.join("missing/r.json")), ..Default::default() };
        let e = check(&bad, 1).unwrap_err().to_string();
        assert!(e.starts_with("--json ") && e.contains("does not exist"), "{e}");
        let bad = OutputFiles { histogram: Some(dir.clone()), ..Default::default() };
        assert!(check(&bad, 1).unwrap_err().to_string().contains("is a directory"));
        let bad = OutputFiles { json: Some(h.clone()), histogram: Some(h.clone()), ..Default::default() };
        assert!(check(&bad, 1).unwrap_err().to_string().contains("both name"));
        let hist = OutputFiles { histogram: Some(dir.join("h")), ..Default::default() };
        assert!(check(&hist, 5).unwrap_err().to_string().contains("--bucket-us 5"));
        let json = OutputFiles { cyclictest_json: Some(dir.join("c.json")), ..Default::default() };
        check(&json, 5).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_unwritable_directory_is_refused() {
        // Root can write anywhere: nothing to test then.
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            return;
        }
        let bad = OutputFiles { json: Some(PathBuf::from("/proc/r.json")), ..Default::default() };
        assert!(check(&bad, 1).unwrap_err().to_string().contains("cannot be written"));
    }
}
