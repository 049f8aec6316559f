//! One HTTP client for both protocols, with retries and exponential backoff.

use std::time::Duration;

use anyhow::Result;
use serde_json::{Value, json};

use super::Backend;

/// A chat prompt: system and user message, and what the reply must look like.
#[derive(Debug, Clone, Default)]
pub struct Prompt {
    pub system: String,
    pub user: String,
    /// A JSON schema the reply must match: sent as `response_format` (OpenAI-compatible servers:
    /// vLLM, llama.cpp's server, OpenAI) or `format` (Ollama), so that a server that supports
    /// structured output replies with parseable JSON by construction. Servers that ignore it
    /// are still read by the tolerant parser.
    pub schema: Option<Value>,
    /// Upper bound on the reply's tokens (a runaway generation costs its whole timeout).
    pub max_tokens: Option<u32>,
}

pub struct Client {
    http: reqwest::Client,
    backend: Backend,
    endpoint: String,
    model: String,
    api_key: Option<String>,
    retries: u32,
    /// First backoff; doubled after each failed attempt.
    pub backoff: Duration,
}

enum Failure {
    /// Worth another try: timeouts, refused connections, 5xx, 429, unparseable replies.
    Retry(String),
    /// Will not get better: 4xx, a reply of the wrong shape.
    Fatal(String),
}

impl Client {
    pub fn new(
        backend: Backend,
        url: &str,
        model: &str,
        api_key: Option<String>,
        timeout: Duration,
        retries: u32,
    ) -> Result<Self> {
        let base = url.trim_end_matches('/');
        let endpoint = match backend {
            Backend::Ollama => format!("{base}/api/chat"),
            Backend::Openai => format!("{base}/chat/completions"),
            Backend::Offline => anyhow::bail!("the offline backend has no LLM client"),
        };
        let http = reqwest::Client::builder().timeout(timeout).build()?;
        Ok(Client {
            http,
            backend,
            endpoint,
            model: model.to_string(),
            api_key,
            retries,
            backoff: Duration::from_millis(500),
        })
    }

    fn body(&self, p: &Prompt) -> Value {
        let messages =
            json!([{"role": "system", "content": p.system}, {"role": "user", "content": p.user}]);
        let mut body = match self.backend {
            Backend::Ollama => json!({"model": self.model, "messages": messages, "stream": false,
                                      "options": {"temperature": 0}}),
            _ => json!({"model": self.model, "messages": messages, "temperature": 0}),
        };
        match self.backend {
            Backend::Ollama => {
                if let Some(s) = &p.schema {
                    body["format"] = s.clone();
                }
                if let Some(n) = p.max_tokens {
                    body["options"]["num_predict"] = n.into();
                }
            }
            _ => {
                if let Some(s) = &p.schema {
                    body["response_format"] = json!({"type": "json_schema",
                        "json_schema": {"name": "answer", "strict": true, "schema": s}});
                }
                if let Some(n) = p.max_tokens {
                    body["max_tokens"] = n.into();
                }
            }
        }
        body
    }

    async fn once(&self, p: &Prompt) -> Result<String, Failure> {
        let mut req = self.http.post(&self.endpoint).json(&self.body(p));
        if let Some(k) = &self.api_key {
            req = req.bearer_auth(k);
        }
        let resp = req.send().await.map_err(|e| {
            let what = if e.is_timeout() {
                "timed out"
            } else {
                "request failed"
            };
            // reqwest's own message hides the cause (connection refused, reset, DNS): add the chain
            let mut why = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(c) = src {
                why = format!("{why}: {c}");
                src = c.source();
            }
            Failure::Retry(format!("{} {what}: {why}", self.endpoint))
        })?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| Failure::Retry(format!("reading the reply: {e}")))?;
        if status.is_server_error() || status.as_u16() == 429 {
            return Err(Failure::Retry(format!(
                "{} answered {status}",
                self.endpoint
            )));
        }
        if !status.is_success() {
            return Err(Failure::Fatal(format!(
                "{} answered {status}: {}",
                self.endpoint,
                text.chars().take(200).collect::<String>()
            )));
        }
        let v: Value = serde_json::from_str(&text).map_err(|e| {
            Failure::Retry(format!(
                "reply is not JSON ({e}): {}",
                text.chars().take(200).collect::<String>()
            ))
        })?;
        let content = match self.backend {
            Backend::Ollama => v.pointer("/message/content"),
            _ => v.pointer("/choices/0/message/content"),
        };
        content
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| {
                Failure::Fatal(format!(
                    "reply has no message content: {}",
                    text.chars().take(200).collect::<String>()
                ))
            })
    }

    /// Asks until `parse` accepts the reply, retrying with exponential backoff; the error says why
    /// the last attempt failed.
    pub async fn complete<T>(&self, p: &Prompt, parse: fn(&str) -> Option<T>) -> Result<T, String> {
        let mut last = String::new();
        for attempt in 0..=self.retries {
            if attempt > 0 {
                tokio::time::sleep(self.backoff * 2u32.saturating_pow(attempt - 1)).await;
            }
            match self.once(p).await {
                Ok(reply) => match parse(&reply) {
                    Some(v) => return Ok(v),
                    None => {
                        last = format!(
                            "unparseable reply: {}",
                            reply.chars().take(120).collect::<String>()
                        )
                    }
                },
                Err(Failure::Retry(e)) => last = e,
                Err(Failure::Fatal(e)) => return Err(e),
            }
        }
        Err(format!(
            "gave up after {} attempts: {last}",
            self.retries + 1
        ))
    }
}
