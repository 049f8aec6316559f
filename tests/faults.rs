//! Faults in the data root: a write that fails for lack of space (a file-size limit, which the
//! kernel enforces exactly like a full disk for the writer) and a damaged Parquet file.

mod common;

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output};

/// `recsys --data-dir ROOT ARGS…`, with writes limited to `fsize` bytes per file when given.
fn recsys(root: &Path, args: &[&str], fsize: Option<u64>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_recsys"));
    cmd.arg("--data-dir").arg(root).args(args).arg("--quiet");
    if let Some(limit) = fsize {
        // SAFETY: only setrlimit, async-signal-safe, between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let r = libc::rlimit {
                    rlim_cur: limit,
                    rlim_max: libc::RLIM_INFINITY,
                };
                if libc::setrlimit(libc::RLIMIT_FSIZE, &r) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
    }
    cmd.output().unwrap()
}

fn ok(out: Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every file under `root` with its bytes.
fn snapshot(root: &Path) -> BTreeMap<String, Vec<u8>> {
    common::files_under(root)
        .into_iter()
        .map(|rel| {
            let bytes = std::fs::read(root.join(&rel)).unwrap();
            (rel, bytes)
        })
        .collect()
}

#[test]
fn a_write_that_runs_out_of_space_loses_nothing_and_a_rerun_completes() {
    let (dir, ctx) = common::synth_raw(3_000, 200);
    let root = dir.path();
    ok(recsys(
        root,
        &["etl", "split", "--quantiles", "0.8,0.9"],
        None,
    ));
    let before = snapshot(root);
    assert!(before.len() >= 7, "{:?}", before.keys());

    // New cut-offs, 16 KiB per file: the first split file cannot be written.
    let changed = ["etl", "split", "--quantiles", "0.7,0.85"];
    let out = recsys(root, &changed, Some(16 * 1024));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("writing ") && err.contains("processed/reviews_train.parquet"),
        "{err}"
    );
    assert!(
        err.contains("File too large") || err.contains("os error 27"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        snapshot(root) == before,
        "the failed run changed the data root"
    );

    // With space again the same command completes, as a run that never failed would.
    ok(recsys(root, &changed, None));
    let (fresh_dir, _) = common::synth_raw(3_000, 200);
    ok(recsys(fresh_dir.path(), &changed, None));
    for s in recsys::Split::ALL {
        let a = recsys::io::read_parquet(&ctx.layout.reviews(s)).unwrap();
        let rel = ctx.layout.reviews(s);
        let rel = rel.strip_prefix(root).unwrap();
        let b = recsys::io::read_parquet(&fresh_dir.path().join(rel)).unwrap();
        assert!(
            a.equals_missing(&b),
            "{s} differs from an uninterrupted run"
        );
    }
}

#[test]
fn a_damaged_parquet_file_is_named_with_the_stage_that_remakes_it() {
    let (dir, ctx) = common::synth_raw(600, 60);
    let root = dir.path();
    ok(recsys(
        root,
        &["etl", "split", "--quantiles", "0.8,0.9"],
        None,
    ));
    let train = ctx.layout.reviews(recsys::Split::Train);
    // Half the file: the footer, where Parquet keeps its schema, is gone.
    let bytes = std::fs::read(&train).unwrap();
    std::fs::write(&train, &bytes[..bytes.len() / 2]).unwrap();
    let out = recsys(root, &["etl", "keywords", "--split", "train"], None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&train.display().to_string())
            && err.contains("re-make it with `recsys pipeline --force split`"),
        "{err}"
    );
    // And garbage in place of a Parquet file reads the same way.
    std::fs::write(&train, b"not parquet at all").unwrap();
    let out = recsys(root, &["etl", "keywords", "--split", "train"], None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("recsys pipeline --force split"), "{err}");
}
