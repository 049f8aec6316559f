//! A resumable cache of LLM answers: one JSON line per answer, appended and flushed as it
//! arrives. A line cut short by a crash is ignored on the next load, so a killed run resumes
//! with everything answered before the kill.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The cache key of one request: backend, model, prompt version and input text.
pub fn key(backend: &str, model: &str, prompt_version: &str, input: &str) -> String {
    let mut h = blake3::Hasher::new();
    for part in [backend, model, prompt_version, input] {
        h.update(&(part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    h.finalize().to_hex()[..32].to_string()
}

#[derive(Serialize, Deserialize)]
struct Line<T> {
    key: String,
    value: T,
}

pub struct Cache<T> {
    path: PathBuf,
    map: HashMap<String, T>,
    file: Option<File>,
}

impl<T: Serialize + DeserializeOwned> Cache<T> {
    /// Loads `path` if it exists; unreadable lines (a crash mid-write) are skipped.
    pub fn open(path: &Path) -> Result<Self> {
        let mut map = HashMap::new();
        if path.is_file() {
            let f =
                File::open(path).with_context(|| format!("opening cache {}", path.display()))?;
            for line in BufReader::new(f).lines() {
                let line = line.with_context(|| format!("reading cache {}", path.display()))?;
                if let Ok(l) = serde_json::from_str::<Line<T>>(&line) {
                    map.insert(l.key, l.value);
                }
            }
        }
        Ok(Cache {
            path: path.to_path_buf(),
            map,
            file: None,
        })
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn get(&self, key: &str) -> Option<&T> {
        self.map.get(key)
    }

    /// Records an answer: appended to the file and flushed before returning.
    pub fn put(&mut self, key: &str, value: &T) -> Result<()> {
        if self.file.is_none() {
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let mut f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            // A previous crash may have left a partial line: start on a fresh one.
            if f.metadata()?.len() > 0 {
                f.write_all(b"\n")?;
            }
            self.file = Some(f);
        }
        let mut line = serde_json::to_vec(&Line {
            key: key.to_string(),
            value,
        })?;
        line.push(b'\n');
        let f = self.file.as_mut().expect("opened above");
        f.write_all(&line)
            .with_context(|| format!("appending to cache {}", self.path.display()))?;
        f.flush()?;
        self.map.insert(
            key.to_string(),
            serde_json::from_slice::<Line<T>>(&line)?.value,
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_a_partial_last_line_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.jsonl");
        {
            let mut c: Cache<Vec<String>> = Cache::open(&p).unwrap();
            c.put("a", &vec!["x".into()]).unwrap();
        }
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"{\"key\":\"b\",\"val").unwrap(); // killed mid-write
        let mut c: Cache<Vec<String>> = Cache::open(&p).unwrap();
        assert_eq!(c.len(), 1);
        c.put("c", &vec!["y".into()]).unwrap();
        let c: Cache<Vec<String>> = Cache::open(&p).unwrap();
        assert_eq!((c.len(), c.get("c").map(|v| v[0].as_str())), (2, Some("y")));
    }

    #[test]
    fn key_depends_on_every_part() {
        let k = key("ollama", "m", "v1", "text");
        assert_ne!(k, key("openai", "m", "v1", "text"));
        assert_ne!(k, key("ollama", "m2", "v1", "text"));
        assert_ne!(k, key("ollama", "m", "v2", "text"));
        assert_ne!(k, key("ollama", "m", "v1", "text2"));
        assert_ne!(key("a", "bc", "", ""), key("ab", "c", "", ""));
    }
}
