//! What a finished stage leaves behind (`{data}/pipeline/{stage}.json`): its settings, the
//! signature of every input and output, when it ran, how long, and its peak memory; and whether
//! a stage is up to date against that record.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::layout::Layout;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub stage: String,
    /// The stage's effective settings: its config's serde form and the globals, as pretty JSON
    /// (secrets are never serialized).
    pub settings: String,
    /// Input path → signature when the stage started.
    pub inputs: BTreeMap<String, String>,
    /// Output path → signature when it finished.
    pub outputs: BTreeMap<String, String>,
    /// RFC 3339, local time.
    pub finished: String,
    pub seconds: f64,
    pub peak_rss_bytes: Option<u64>,
    /// The stage's own summary line(s).
    pub summary: String,
    pub recsys_version: String,
    /// The stage's code version when it ran (its `CODE_VERSION`; 0 in records from before
    /// versions were recorded).
    #[serde(default)]
    pub code_version: u32,
}

/// Where a stage's record lives.
pub fn path(layout: &Layout, stage: &str) -> PathBuf {
    layout.pipeline_dir().join(format!("{stage}.json"))
}

pub fn read(layout: &Layout, stage: &str) -> Result<Option<Record>> {
    let p = path(layout, stage);
    if !p.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    // An unreadable record (an older recsys, a hand edit) only means "run it again".
    Ok(serde_json::from_str(&text).ok())
}

/// A file's size and modification time, a directory's files' (hashed), or "missing".
pub fn signature(p: &Path) -> String {
    let Ok(meta) = std::fs::metadata(p) else {
        return "missing".into();
    };
    if meta.is_file() {
        return format!("{} bytes, mtime {}", meta.len(), mtime_ns(&meta));
    }
    let mut files = Vec::new();
    let mut stack = vec![p.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let q = e.path();
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(q),
                Ok(m) => files.push((q, m.len(), mtime_ns(&m))),
                Err(_) => {}
            }
        }
    }
    files.sort();
    let mut h = blake3::Hasher::new();
    for (q, len, t) in &files {
        let rel = q.strip_prefix(p).unwrap_or(q);
        h.update(format!("{}\0{len}\0{t}\n", rel.display()).as_bytes());
    }
    let hex = h.finalize().to_hex();
    format!("{} files, {}", files.len(), &hex[..16])
}

fn mtime_ns(m: &std::fs::Metadata) -> u128 {
    m.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos())
}

pub fn signatures(paths: &[PathBuf]) -> BTreeMap<String, String> {
    paths
        .iter()
        .map(|p| (p.display().to_string(), signature(p)))
        .collect()
}

/// Why a stage must run, or that it need not.
#[derive(Debug, Clone, PartialEq)]
pub enum Freshness {
    UpToDate,
    Stale(String),
}

/// Compares a stage with its record. `rewritten`: outputs that earlier stages of this run will
/// write (a dry run has not written them yet).
pub fn check(
    record: Option<&Record>,
    code_version: u32,
    settings: &str,
    inputs: &[PathBuf],
    outputs: &[PathBuf],
    rewritten: &HashSet<PathBuf>,
) -> Freshness {
    let Some(rec) = record else {
        return Freshness::Stale("no record of a finished run".into());
    };
    let this = env!("CARGO_PKG_VERSION");
    if rec.recsys_version != this {
        return Freshness::Stale(format!(
            "made by recsys {}, this is recsys {this}",
            rec.recsys_version
        ));
    }
    if rec.code_version != code_version {
        return Freshness::Stale(format!(
            "the stage's code changed since (version {} → {code_version})",
            rec.code_version
        ));
    }
    if rec.settings != settings {
        return Freshness::Stale(format!(
            "settings changed: {}",
            diff(&rec.settings, settings)
        ));
    }
    for p in inputs {
        if rewritten.contains(p) {
            return Freshness::Stale(format!(
                "input {} is rewritten by an earlier stage",
                p.display()
            ));
        }
        let key = p.display().to_string();
        let now = signature(p);
        match rec.inputs.get(&key) {
            Some(was) if *was == now => {}
            Some(_) if now == "missing" => {
                return Freshness::Stale(format!("input {key} is missing"));
            }
            Some(_) => return Freshness::Stale(format!("input {key} changed since")),
            None => return Freshness::Stale(format!("new input {key}")),
        }
    }
    for p in outputs {
        let key = p.display().to_string();
        let now = signature(p);
        if now == "missing" {
            return Freshness::Stale(format!("output {key} is missing"));
        }
        if rec.outputs.get(&key) != Some(&now) {
            return Freshness::Stale(format!("output {key} was changed after the stage made it"));
        }
    }
    Freshness::UpToDate
}

/// The first setting that differs, as `was → now`.
fn diff(was: &str, now: &str) -> String {
    let a: Vec<&str> = was.lines().collect();
    let b: Vec<&str> = now.lines().collect();
    let i = a
        .iter()
        .zip(&b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    let clean = |s: Option<&&str>| {
        s.map_or("(none)".to_string(), |s| {
            s.trim().trim_end_matches(',').to_string()
        })
    };
    format!("{} → {}", clean(a.get(i)), clean(b.get(i)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_stale_for_each_kind_of_change() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.txt");
        let output = dir.path().join("out");
        std::fs::write(&input, "a").unwrap();
        std::fs::create_dir_all(&output).unwrap();
        std::fs::write(output.join("x"), "b").unwrap();
        let rec = Record {
            stage: "s".into(),
            settings: "top_k: 100,\nann: false,".into(),
            inputs: signatures(std::slice::from_ref(&input)),
            outputs: signatures(std::slice::from_ref(&output)),
            finished: String::new(),
            seconds: 0.0,
            peak_rss_bytes: None,
            summary: String::new(),
            recsys_version: env!("CARGO_PKG_VERSION").into(),
            code_version: 3,
        };
        let none = HashSet::new();
        let (i, o) = (vec![input.clone()], vec![output.clone()]);
        let check =
            |settings: &str, rw: &HashSet<PathBuf>| check(Some(&rec), 3, settings, &i, &o, rw);
        assert_eq!(check(&rec.settings, &none), Freshness::UpToDate);
        assert_eq!(
            super::check(Some(&rec), 4, &rec.settings, &i, &o, &none),
            Freshness::Stale("the stage's code changed since (version 3 → 4)".into())
        );
        let older = Record {
            recsys_version: "0.0.9".into(),
            ..rec.clone()
        };
        assert_eq!(
            super::check(Some(&older), 3, &rec.settings, &i, &o, &none),
            Freshness::Stale(format!(
                "made by recsys 0.0.9, this is recsys {}",
                env!("CARGO_PKG_VERSION")
            ))
        );
        let Freshness::Stale(why) = check("top_k: 50,\nann: false,", &none) else {
            panic!()
        };
        assert_eq!(why, "settings changed: top_k: 100 → top_k: 50");
        let rw: HashSet<PathBuf> = [input.clone()].into();
        assert!(
            matches!(check(&rec.settings, &rw), Freshness::Stale(w) if w.contains("rewritten"))
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(output.join("x"), "c").unwrap();
        assert!(matches!(check(&rec.settings, &none), Freshness::Stale(w) if w.contains("output")));
        std::fs::write(&input, "aa").unwrap();
        assert!(matches!(check(&rec.settings, &none), Freshness::Stale(w) if w.contains("input")));
        assert!(matches!(
            super::check(None, 3, "", &i, &o, &none),
            Freshness::Stale(_)
        ));
    }
}
