//! Hostile values for every numeric flag of every command (and a few as settings keys): each is
//! refused at the edge with exit code 2 and a message naming the flag or key, or accepted and
//! run to an ordinary end — never a panic (exit 101), an abort or a hang.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_recsys");

/// Negative, zero, not-a-number, infinite, absurdly large, and one past every 64-bit count.
const VALUES: [&str; 6] = ["-1", "0", "nan", "inf", "1e30", "18446744073709551615"];

/// Runs the binary in `cwd` (no settings file of the caller's), killing it after a minute.
fn recsys(cwd: &Path, args: &[String]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .env_remove("RECSYS_DATA_DIR")
        .env_remove("OPENAI_API_KEY")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            panic!("hung for a minute: recsys {}", args.join(" "));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.wait_with_output().unwrap()
}

#[derive(Debug)]
struct Case {
    command: Vec<String>,
    flag: String,
    /// The command's required arguments, filled in (`x`, or an enum's first value).
    required: Vec<String>,
}

fn numeric_flags() -> Vec<Case> {
    let dir = tempfile::tempdir().unwrap();
    let out = recsys(dir.path(), &["debug".into(), "flags".into()]);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 3, "{l}");
            Case {
                command: f[0].split(' ').map(String::from).collect(),
                flag: f[1].to_string(),
                required: f[2].split_whitespace().map(String::from).collect(),
            }
        })
        .collect()
}

#[test]
fn every_numeric_flag_refuses_hostile_values_without_a_panic() {
    let cases = numeric_flags();
    // The walk sees the flags that matter most (a smaller list means the walk broke).
    for (cmd, flag) in [
        ("etl keywords", "--timeout-s"),
        ("retrieve", "--top-k"),
        ("train retriever", "--lr"),
        ("etl split", "--quantiles"),
        ("status", "--seed"),
    ] {
        assert!(
            cases
                .iter()
                .any(|c| c.command.join(" ") == cmd && c.flag == flag),
            "{cmd} {flag} not in the walk"
        );
    }
    assert!(cases.len() >= 50, "only {} numeric flags", cases.len());
    let work = tempfile::tempdir().unwrap();
    let runs: Vec<(usize, &Case, &str)> = cases
        .iter()
        .flat_map(|c| VALUES.iter().map(move |v| (c, *v)))
        .enumerate()
        .map(|(i, (c, v))| (i, c, v))
        .collect();
    let failures = std::sync::Mutex::new(Vec::new());
    let (refused, accepted) = (
        std::sync::atomic::AtomicUsize::new(0),
        std::sync::atomic::AtomicUsize::new(0),
    );
    let threads = 4;
    std::thread::scope(|s| {
        for t in 0..threads {
            let (runs, failures, refused, accepted) = (&runs, &failures, &refused, &accepted);
            let work = work.path();
            s.spawn(move || {
                for &(i, case, value) in runs.iter().skip(t).step_by(threads) {
                    let root = work.join(format!("root{i}"));
                    let mut args = vec!["--data-dir".to_string(), root.display().to_string()];
                    args.extend(case.command.iter().cloned());
                    args.extend(case.required.iter().cloned());
                    args.push(format!("{}={value}", case.flag));
                    let out = recsys(work, &args);
                    let err = String::from_utf8_lossy(&out.stderr);
                    let code = out.status.code();
                    let shown = format!("recsys {} → {code:?}: {err}", args[2..].join(" "));
                    let fail = |why: &str| failures.lock().unwrap().push(format!("{why}: {shown}"));
                    if code.is_none() || code == Some(101) || err.contains("panicked") {
                        fail("panic or signal");
                        continue;
                    }
                    // A 64-bit seed is any u64; every other flag's range is far below u64::MAX.
                    let always_absurd = matches!(value, "-1" | "nan" | "inf" | "1e30")
                        || (value.starts_with("1844") && case.flag != "--seed");
                    if code == Some(2) {
                        if !err.contains(&case.flag) {
                            fail("refused without naming the flag");
                        }
                        refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    } else if always_absurd {
                        fail("accepted an absurd value");
                    } else {
                        accepted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    println!(
        "hostile flags: {} flags × {} values = {} runs: {} refused (exit 2), {} accepted and \
         ended normally, {} failures",
        cases.len(),
        VALUES.len(),
        runs.len(),
        refused.into_inner(),
        accepted.into_inner(),
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn hostile_settings_values_are_refused_with_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    for (section, key, value, command) in [
        ("keywords", "timeout_s", "nan", "etl keywords"),
        ("keywords", "timeout_s", "inf", "etl keywords"),
        ("keywords", "timeout_s", "-1.0", "etl keywords"),
        ("keywords", "timeout_s", "1e30", "etl keywords"),
        ("retrieve", "top_k", "-1", "retrieve"),
        ("retrieve", "top_k", "0", "retrieve"),
        ("train_retriever", "lr", "inf", "train retriever"),
        ("split", "quantiles", "[0.8, nan]", "etl split"),
    ] {
        let file = dir.path().join("recsys.toml");
        std::fs::write(&file, format!("# hostile\n[{section}]\n{key} = {value}\n")).unwrap();
        let mut args: Vec<String> = vec!["--data-dir".into(), "d".into()];
        args.extend(command.split(' ').map(String::from));
        let out = recsys(dir.path(), &args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "[{section}] {key} = {value}: {err}"
        );
        assert!(
            err.contains("recsys.toml line 3") && err.contains(&format!("`{section}.{key}`")),
            "[{section}] {key} = {value}: {err}"
        );
    }
}

#[test]
fn a_reader_that_went_away_ends_the_output_quietly() {
    // `recsys status | head -1`: stdout is a pipe whose reading end is already closed.
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: both descriptors were just made by pipe(2) and are owned here.
    let (read, write) = unsafe {
        (
            std::os::fd::OwnedFd::from_raw_fd(fds[0]),
            std::os::fd::OwnedFd::from_raw_fd(fds[1]),
        )
    };
    drop(read);
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["--data-dir", "d", "status"])
        .current_dir(dir.path())
        .stdout(Stdio::from(write))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
