//! A real LLM server for the tests: llama.cpp's `llama-server` with SmolLM2-135M-Instruct, both
//! put in place by `make llm` (scripts/llm_setup.sh) under `$RECSYS_LLM_DIR` (default
//! `~/.cache/recsys/llm`). Loopback only; the process is killed when the handle drops.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use recsys::etl::keywords::{KeywordsConfig, SplitChoice};
use recsys::llm::{Backend, LlmArgs};

pub struct Llama {
    child: Option<Child>,
    pub url: String,
    pub port: u16,
}

/// The server binary and the model, when `make llm` has put them in place; else why not.
pub fn llama_files() -> Result<(PathBuf, PathBuf), String> {
    let dir = std::env::var_os("RECSYS_LLM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/recsys/llm")
        });
    let bin = dir.join("bin/llama-server");
    let model = dir.join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    if bin.is_file() && model.is_file() {
        Ok((bin, model))
    } else {
        Err(format!(
            "no llama-server / SmolLM2 model under {} (`make llm` builds them)",
            dir.display()
        ))
    }
}

/// `etl keywords` of every split against the server at `url` (schema on, no retries).
pub fn keywords_cfg(url: &str, concurrency: usize) -> KeywordsConfig {
    KeywordsConfig {
        split: SplitChoice::All,
        llm: LlmArgs {
            backend: Backend::Openai,
            model: Some("smollm2".into()),
            url: Some(url.to_string()),
            concurrency,
            retries: 0,
            timeout_s: 300.0,
            ..LlmArgs::default()
        },
        ..KeywordsConfig::default()
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` on loopback: the status code, or None when nothing answers.
fn get(port: u16, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    buf.split_whitespace().nth(1)?.parse().ok()
}

impl Llama {
    /// Starts the server with `parallel` slots on a free port and waits until it is ready.
    pub fn start(parallel: usize) -> Llama {
        let (bin, model) = llama_files().expect("llama_files() first");
        Self::start_on(&bin, &model, parallel, free_port())
    }

    pub fn start_on(bin: &Path, model: &Path, parallel: usize, port: u16) -> Llama {
        let child = Command::new(bin)
            .args(["-m", &model.to_string_lossy()])
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["-np", &parallel.to_string()])
            // 4,096 tokens per slot: a long review and its answer fit
            .args(["-c", &(4096 * parallel).to_string()])
            .args(["-t", "2", "--alias", "smollm2"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting llama-server");
        let mut l = Llama {
            child: Some(child),
            url: format!("http://127.0.0.1:{port}/v1"),
            port,
        };
        let t0 = Instant::now();
        while get(port, "/health") != Some(200) {
            if let Some(st) = l.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("llama-server exited at start: {st}");
            }
            assert!(
                t0.elapsed() < Duration::from_secs(120),
                "llama-server not ready in 120 s"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        l
    }

    /// Kills the server (as a crash would) and waits for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Llama {
    fn drop(&mut self) {
        self.kill();
    }
}
