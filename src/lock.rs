//! One writer per data root: every command that writes under a data root holds
//! `{root}/.recsys.lock` for its whole run.
//!
//! The lock is the operating system's advisory file lock (`flock`), so the kernel releases it when
//! the holder exits or is killed: a crashed run never leaves the root locked. The file's content
//! names the holder (pid, stage, since when) for the message a second writer gets; a clean exit
//! empties it, so content found under a free lock is what a killed run left, and is taken over
//! with a warning. The file itself is never removed (removing a lock file races with a process
//! that has just opened it).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// The lock file's name under the data root.
pub const FILE: &str = ".recsys.lock";

/// Who holds a data root.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Holder {
    pub pid: u32,
    pub stage: String,
    /// RFC 3339, local time.
    pub since: String,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "recsys pid {} (stage {}, since {})",
            self.pid, self.stage, self.since
        )
    }
}

/// A held data-root lock; released on drop (and by the kernel if the process dies).
#[derive(Debug)]
pub struct RootLock {
    file: Mutex<File>,
    path: PathBuf,
    since: String,
    /// The holder a killed run left in the file, when this lock took it over.
    pub taken_over: Option<Holder>,
}

impl RootLock {
    /// Takes the lock of `root` (created when missing) for `stage`, or fails at once with the
    /// holder's pid, stage and start time when another process has it.
    pub fn acquire(root: &Path, stage: &str) -> Result<RootLock> {
        std::fs::create_dir_all(root)
            .with_context(|| format!("creating the data root {}", root.display()))?;
        let path = root.join(FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening the lock file {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                bail!(
                    "data root {} is in use by {} — wait for it to finish, or stop it; \
                     read-only commands (status, search, eval, config show) need no lock",
                    root.display(),
                    holder_of(&path)
                )
            }
            Err(TryLockError::Error(e)) => {
                return Err(e).with_context(|| {
                    format!(
                        "locking {} (the file system of the data root must support file locks)",
                        path.display()
                    )
                });
            }
        }
        let taken_over = read_holder(&mut file).filter(|h| h.pid != std::process::id());
        let since = chrono::Local::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, false);
        let lock = RootLock {
            file: Mutex::new(file),
            path,
            since,
            taken_over,
        };
        lock.set_stage(stage)?;
        Ok(lock)
    }

    /// Names the stage now running (what a second writer's message shows).
    pub fn set_stage(&self, stage: &str) -> Result<()> {
        let holder = Holder {
            pid: std::process::id(),
            stage: stage.to_string(),
            since: self.since.clone(),
        };
        let text = serde_json::to_string(&holder)? + "\n";
        let mut f = self.file.lock().unwrap_or_else(|e| e.into_inner());
        f.set_len(0)
            .and_then(|()| f.rewind())
            .and_then(|()| f.write_all(text.as_bytes()))
            .and_then(|()| f.flush())
            .with_context(|| format!("writing the lock file {}", self.path.display()))
    }
}

impl Drop for RootLock {
    fn drop(&mut self) {
        // Emptied before the kernel lock goes with the file handle: an empty file under a free
        // lock means a clean exit.
        let f = self.file.get_mut().unwrap_or_else(|e| e.into_inner());
        let _ = f.set_len(0);
    }
}

fn read_holder(file: &mut File) -> Option<Holder> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut text).ok()?;
    serde_json::from_str(text.trim()).ok()
}

/// The holder named in a locked file. The holder writes its name right after taking the lock,
/// so an empty file is given a moment before the message says only "another process".
fn holder_of(path: &Path) -> String {
    let t0 = Instant::now();
    loop {
        if let Some(h) = File::open(path).ok().as_mut().and_then(read_holder) {
            return h.to_string();
        }
        if t0.elapsed() > Duration::from_millis(300) {
            return "another recsys process".to_string();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_writer_is_refused_with_the_holder_and_gets_the_root_once_it_is_free() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("data");
        let first = RootLock::acquire(&root, "pipeline").unwrap();
        assert!(first.taken_over.is_none());
        first.set_stage("index").unwrap();
        let t0 = Instant::now();
        let err = RootLock::acquire(&root, "etl split")
            .unwrap_err()
            .to_string();
        assert!(t0.elapsed() < Duration::from_secs(1));
        let pid = std::process::id();
        assert!(
            err.contains(&format!(
                "is in use by recsys pid {pid} (stage index, since "
            )),
            "{err}"
        );
        assert!(err.contains(&root.display().to_string()), "{err}");
        drop(first);
        assert_eq!(std::fs::read(root.join(FILE)).unwrap().len(), 0);
        let again = RootLock::acquire(&root, "etl split").unwrap();
        assert!(
            again.taken_over.is_none(),
            "a clean exit leaves nothing to take over"
        );
    }

    #[test]
    fn what_a_killed_run_left_is_taken_over_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let dead = Holder {
            pid: u32::MAX - 1,
            stage: "train-retriever".into(),
            since: "2026-01-01T00:00:00+00:00".into(),
        };
        std::fs::write(dir.path().join(FILE), serde_json::to_string(&dead).unwrap()).unwrap();
        let lock = RootLock::acquire(dir.path(), "pipeline").unwrap();
        assert_eq!(lock.taken_over.as_ref(), Some(&dead));
        let now: Holder =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join(FILE)).unwrap()).unwrap();
        assert_eq!(
            (now.pid, now.stage.as_str()),
            (std::process::id(), "pipeline")
        );
    }
}
