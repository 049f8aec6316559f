//! Output plumbing shared by all stages: atomic writes, Parquet, progress bars, number formatting.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use polars::prelude::*;

/// The temporary name an output is written under before it is renamed into place.
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// An output being written under its temporary name: [`commit`](Self::commit) renames it into
/// place; dropped uncommitted (an error, a panic), the temporary file is removed. A crash
/// therefore never leaves a half-written file under a name a later stage would trust.
pub struct AtomicPath {
    path: PathBuf,
    tmp: PathBuf,
    committed: bool,
}

impl AtomicPath {
    pub fn new(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        Ok(AtomicPath {
            path: path.to_path_buf(),
            tmp: temp_path(path),
            committed: false,
        })
    }
    pub fn tmp(&self) -> &Path {
        &self.tmp
    }
    pub fn commit(mut self) -> Result<()> {
        fs::rename(&self.tmp, &self.path).with_context(|| {
            format!("renaming {} to {}", self.tmp.display(), self.path.display())
        })?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for AtomicPath {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Writes `path` through `write(tmp)` and renames the result into place only on success.
pub fn write_atomic<T>(path: &Path, write: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
    let out = AtomicPath::new(path)?;
    let v = write(out.tmp())?;
    out.commit()?;
    Ok(v)
}

/// Writes pretty-printed JSON, atomically.
pub fn write_json(path: &Path, v: &impl serde::Serialize) -> Result<()> {
    write_atomic(path, |tmp| {
        fs::write(tmp, serde_json::to_string_pretty(v)?)
            .with_context(|| format!("writing {}", tmp.display()))
    })
}

/// Writes a DataFrame as zstd Parquet, atomically.
pub fn write_parquet(df: &mut DataFrame, path: &Path) -> Result<()> {
    parquet_pending(df, path)?.commit()
}

/// Writes a DataFrame as zstd Parquet under its temporary name, for a stage that renames all its
/// outputs into place together once every one is written (a full disk half-way through then
/// leaves every earlier output as it was).
pub fn parquet_pending(df: &mut DataFrame, path: &Path) -> Result<AtomicPath> {
    let out = AtomicPath::new(path)?;
    let tmp = out.tmp();
    let file = File::create(tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let written = ParquetWriter::new(file)
        .with_compression(ParquetCompression::Zstd(None))
        .finish(df);
    Context::with_context(written, || format!("writing {}", path.display()))?;
    Ok(out)
}

/// Prints `text` and a newline on stdout. A reader that has gone away (`recsys status | head -1`)
/// is not an error: the rest is dropped, as other command-line tools do (Rust's default would
/// panic); any other write error is returned.
pub fn print_line(text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r,
    }
}

/// A text column of `df`, row by row (a null is ""): an error names a missing or non-text column.
pub fn text_column<'a>(df: &'a DataFrame, name: &str) -> Result<Vec<&'a str>> {
    let c = df
        .column(name)
        .map_err(|_| anyhow::anyhow!("column `{name}` missing"))?;
    let c = c
        .str()
        .map_err(|_| anyhow::anyhow!("column `{name}` is {}, not text", c.dtype()))?;
    Ok(c.iter().map(|v| v.unwrap_or("")).collect())
}

/// [`text_column`], owned.
pub fn strings(df: &DataFrame, name: &str) -> Result<Vec<String>> {
    Ok(text_column(df, name)?
        .into_iter()
        .map(str::to_string)
        .collect())
}

/// Reads a whole Parquet file (lazily scanned, collected once).
pub fn read_parquet(path: &Path) -> Result<DataFrame> {
    Context::with_context(scan_parquet(path)?.collect(), || {
        format!("reading {}: {}", path.display(), remake(path, "damaged"))
    })
}

/// What to run when a data-root file is missing or damaged: its stage, forced.
pub fn remake(path: &Path, what: &str) -> String {
    match crate::layout::made_by(path) {
        Some(stage) => format!("{what}; re-make it with `recsys pipeline --force {stage}`"),
        None => format!("{what}; run the stage that writes it again"),
    }
}

/// A lazy scan of a Parquet file with a clear error when it is missing or not Parquet.
pub fn scan_parquet(path: &Path) -> Result<LazyFrame> {
    if !path.is_file() {
        let how = match crate::layout::made_by(path) {
            Some(stage) => {
                format!("run `recsys pipeline --to {stage}` (or that stage alone) first")
            }
            None => "run the stage that writes it first".to_string(),
        };
        anyhow::bail!("{} not found: {how}", path.display());
    }
    let p = path.to_string_lossy();
    let scan = LazyFrame::scan_parquet(PlRefPath::from(p.as_ref()), ScanArgsParquet::default());
    Context::with_context(scan, || {
        format!(
            "opening {}: {}",
            path.display(),
            remake(path, "not a readable Parquet file")
        )
    })
}

/// Opens a `.jsonl` or `.jsonl.gz` file for line reading (`.gz` is decided by the name).
/// The bar, sized to the file on disk, advances with the bytes read from disk.
pub fn open_lines(path: &Path, quiet: bool) -> Result<(Box<dyn BufRead + Send>, ProgressBar)> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let pb = progress_bytes(size, &name, quiet);
    let counted = pb.wrap_read(file);
    let inner: Box<dyn Read + Send> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(flate2::read::MultiGzDecoder::new(BufReader::with_capacity(
            1 << 20,
            counted,
        )))
    } else {
        Box::new(counted)
    };
    Ok((Box::new(BufReader::with_capacity(1 << 20, inner)), pb))
}

/// Seconds between progress lines when stderr is not a terminal.
const LOG_EVERY_S: u64 = 30;

/// Progress for a log file: when stderr is not a terminal (a run under nohup, in the background,
/// in CI), a bar is written as a plain line at most every [`LOG_EVERY_S`] seconds instead of
/// being redrawn in place (indicatif would otherwise hide it).
#[derive(Debug)]
struct LineLog {
    line: std::sync::Mutex<(String, Option<std::time::Instant>)>,
    every: Duration,
}

impl LineLog {
    fn new(every: Duration) -> Self {
        LineLog {
            line: std::sync::Mutex::new((String::new(), None)),
            every,
        }
    }
    /// The pending line if it is due (and forgets it either way).
    fn take_due(&self) -> Option<String> {
        let mut g = self.line.lock().ok()?;
        let text = std::mem::take(&mut g.0);
        let due = g.1.is_none_or(|t| t.elapsed() >= self.every);
        if due && !text.trim().is_empty() {
            g.1 = Some(std::time::Instant::now());
            return Some(text);
        }
        None
    }
}

impl indicatif::TermLike for LineLog {
    fn width(&self) -> u16 {
        120
    }
    fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn write_line(&self, s: &str) -> std::io::Result<()> {
        self.write_str(s)
    }
    fn write_str(&self, s: &str) -> std::io::Result<()> {
        let s = s.trim();
        if let (false, Ok(mut g)) = (s.is_empty(), self.line.lock()) {
            if !g.0.is_empty() {
                g.0.push_str(" | ");
            }
            g.0.push_str(s);
        }
        Ok(())
    }
    fn clear_line(&self) -> std::io::Result<()> {
        Ok(())
    }
    fn flush(&self) -> std::io::Result<()> {
        if let Some(line) = self.take_due() {
            eprintln!("{} {line}", chrono::Local::now().format("%H:%M:%S"));
        }
        Ok(())
    }
}

/// A progress bar over `len` units, hidden with `--quiet`; a line every 30 s when stderr is not
/// a terminal.
pub fn progress(len: u64, what: &str, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        pb.set_draw_target(indicatif::ProgressDrawTarget::term_like_with_hz(
            Box::new(LineLog::new(Duration::from_secs(LOG_EVERY_S))),
            1,
        ));
    }
    pb.set_style(
        ProgressStyle::with_template(
            "{msg:>14} [{bar:30}] {human_pos}/{human_len} ({per_sec}, eta {eta})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    pb.enable_steady_tick(Duration::from_millis(200));
    pb
}

/// A byte-based progress bar (reading raw files), hidden with `--quiet`.
pub fn progress_bytes(len: u64, what: &str, quiet: bool) -> ProgressBar {
    let pb = progress(len, what, quiet);
    pb.set_style(
        ProgressStyle::with_template(
            "{msg:>14} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    pb
}

/// True when every output exists and is at least as new as every input (make-style).
pub fn is_fresh(outputs: &[PathBuf], inputs: &[PathBuf]) -> bool {
    let mtime = |p: &PathBuf| fs::metadata(p).and_then(|m| m.modified()).ok();
    let newest_input = inputs
        .iter()
        .map(mtime)
        .collect::<Option<Vec<_>>>()
        .and_then(|v| v.into_iter().max());
    let oldest_output = outputs
        .iter()
        .map(mtime)
        .collect::<Option<Vec<_>>>()
        .and_then(|v| v.into_iter().min());
    match (oldest_output, newest_input) {
        (Some(out), Some(inp)) => out >= inp,
        (Some(_), None) => inputs.is_empty(),
        _ => false,
    }
}

/// `1234567` → `1,234,567`.
pub fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Milliseconds since the epoch as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn utc(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| format!("{ms} ms"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_for_logs_are_throttled() {
        use indicatif::TermLike;
        let log = LineLog::new(Duration::from_secs(3600));
        log.write_str("  step 1/10  ").unwrap();
        assert_eq!(
            log.take_due().as_deref(),
            Some("step 1/10"),
            "the first is due"
        );
        log.write_str("step 2/10").unwrap();
        assert_eq!(log.take_due(), None, "an hour has not passed");
        let log = LineLog::new(Duration::ZERO);
        log.write_line("a").unwrap();
        log.write_str("").unwrap();
        log.write_str("b").unwrap();
        assert_eq!(log.take_due().as_deref(), Some("a | b"));
        assert_eq!(log.take_due(), None, "nothing new was drawn");
    }

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(701528), "701,528");
    }

    #[test]
    fn failed_write_leaves_no_file_and_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("x.parquet");
        let r: Result<()> = write_atomic(&out, |tmp| {
            std::fs::write(tmp, b"half")?;
            anyhow::bail!("boom")
        });
        assert!(r.is_err());
        assert!(!out.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn seed_cutoff_formats_as_utc() {
        assert_eq!(utc(1621867671638), "2021-05-24 14:47:51 UTC");
    }
}
