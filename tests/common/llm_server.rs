//! An in-process HTTP server that speaks Ollama's `/api/chat` and OpenAI's
//! `/v1/chat/completions`, with scripted failures. Loopback only.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the server does with request number `n` (0-based) whose user message is `user`.
pub enum Reply {
    /// Answer with this assistant message content.
    Content(String),
    /// Answer with an HTTP status and a body.
    Status(u16, String),
    /// Sleep, then answer with the content.
    Slow(Duration, String),
}

pub struct MockLlm {
    pub url: String,
    pub requests: Arc<AtomicUsize>,
    /// The body of the last request.
    pub last_body: Arc<Mutex<Option<serde_json::Value>>>,
}

impl MockLlm {
    pub fn start(script: impl Fn(usize, &str) -> Reply + Send + Sync + 'static) -> MockLlm {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(AtomicUsize::new(0));
        let last_body = Arc::new(Mutex::new(None));
        let (count, script, last) = (requests.clone(), Arc::new(script), last_body.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (count, script, last) = (count.clone(), script.clone(), last.clone());
                std::thread::spawn(move || handle(stream, &count, &*script, &last));
            }
        });
        MockLlm {
            url,
            requests,
            last_body,
        }
    }
    pub fn count(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

fn handle(
    stream: TcpStream,
    count: &AtomicUsize,
    script: &(dyn Fn(usize, &str) -> Reply + Send + Sync),
    last: &Mutex<Option<serde_json::Value>>,
) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
        return;
    }
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .to_string();
    let mut len = 0;
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).unwrap();
        if h.trim().is_empty() {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body).unwrap();
    let req: serde_json::Value = serde_json::from_slice(&body).unwrap();
    *last.lock().unwrap() = Some(req.clone());
    let user = req["messages"][1]["content"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let n = count.fetch_add(1, Ordering::SeqCst);
    let ollama = path.ends_with("/api/chat");
    let wrap = |content: &str| {
        if ollama {
            serde_json::json!({"model": req["model"], "message": {"role": "assistant", "content": content}, "done": true})
        } else {
            serde_json::json!({"id": "x", "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]})
        }
        .to_string()
    };
    let (status, out) = match script(n, &user) {
        Reply::Content(c) => (200, wrap(&c)),
        Reply::Status(s, b) => (s, b),
        Reply::Slow(d, c) => {
            std::thread::sleep(d);
            (200, wrap(&c))
        }
    };
    let mut stream = stream;
    let _ = write!(
        stream,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{out}",
        out.len()
    );
}

/// The review text inside a keywords prompt ("Review: …" line).
pub fn review_of(user: &str) -> String {
    user.lines()
        .find_map(|l| l.strip_prefix("Review: "))
        .unwrap_or("")
        .to_string()
}
