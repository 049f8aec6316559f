//! LLM clients for keywords and summaries: Ollama (`/api/chat`) and any OpenAI-compatible
//! server (`/v1/chat/completions`: vLLM, llama.cpp server, Ollama's own), with concurrent
//! requests, retries with exponential backoff, tolerant reply parsing and a resumable cache.

pub mod cache;
pub mod client;
pub mod parse;

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Result;
use futures::StreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use cache::Cache;
pub use client::{Client, Prompt};

/// Where keywords and summaries come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// The built-in extractor: deterministic, no model, no network
    Offline,
    /// An Ollama server (`/api/chat`)
    Ollama,
    /// Any OpenAI-compatible server (`/v1/chat/completions`): vLLM, llama.cpp, Ollama
    Openai,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Offline => "offline",
            Backend::Ollama => "ollama",
            Backend::Openai => "openai",
        }
    }
    fn default_url(self) -> &'static str {
        match self {
            Backend::Offline => "",
            Backend::Ollama => "http://localhost:11434",
            Backend::Openai => "http://localhost:8000/v1",
        }
    }
}

/// LLM flags shared by `etl keywords` and `etl summaries`.
#[derive(clap::Args, Debug, Clone, serde::Serialize)]
pub struct LlmArgs {
    /// offline (built-in extractor), ollama, or openai (any OpenAI-compatible server)
    #[arg(long, value_enum, default_value_t = Backend::Offline)]
    pub backend: Backend,
    /// Model name on the server, e.g. llama3.1:8b (Ollama) or meta-llama/Llama-3.1-8B-Instruct (vLLM)
    #[arg(long)]
    pub model: Option<String>,
    /// Server URL [default: http://localhost:11434 for ollama, http://localhost:8000/v1 for openai]
    #[arg(long)]
    pub url: Option<String>,
    /// Requests in flight at once
    #[arg(long, default_value_t = 8, value_parser = crate::cli::concurrency)]
    pub concurrency: usize,
    /// Retries per request after a timeout, a 5xx / 429, a refused connection or an unparseable reply
    #[arg(long, default_value_t = 3, value_parser = crate::cli::count0_u32)]
    pub retries: u32,
    /// Seconds before a request times out
    #[arg(long, default_value_t = 120.0, value_parser = crate::cli::seconds)]
    pub timeout_s: f64,
    /// Bearer token for OpenAI-compatible servers that want one
    #[arg(long, env = "OPENAI_API_KEY", hide_env_values = true)]
    // A secret: never written to a record (the pipeline's records are on disk).
    #[serde(skip_serializing)]
    pub api_key: Option<String>,
    /// Do not ask for structured output (a JSON schema as `response_format` / Ollama `format`);
    /// for servers that reject it. Replies are then parsed tolerantly.
    #[arg(long)]
    pub no_schema: bool,
}

crate::cli::clap_default!(LlmArgs);

impl LlmArgs {
    /// The model name recorded in outputs ("" offline).
    pub fn model_name(&self) -> String {
        self.model.clone().unwrap_or_default()
    }

    /// A client for the LLM backends (an error for `offline`, or without `--model`).
    pub fn client(&self) -> Result<Client> {
        anyhow::ensure!(
            self.backend != Backend::Offline,
            "the offline backend has no LLM client"
        );
        let model = self
            .model
            .clone()
            .ok_or_else(|| anyhow::anyhow!("--backend {} needs --model", self.backend.as_str()))?;
        let url = self
            .url
            .clone()
            .unwrap_or_else(|| self.backend.default_url().to_string());
        Client::new(
            self.backend,
            &url,
            &model,
            self.api_key.clone(),
            // The flag's parser already refused a bad value; a library caller gets std's check.
            Duration::try_from_secs_f64(self.timeout_s)
                .map_err(|e| anyhow::anyhow!("timeout_s {}: {e}", self.timeout_s))?,
            self.retries,
        )
    }
}

/// One request: `key` identifies it in the cache (see [`cache::key`]).
pub struct Job {
    pub key: String,
    pub prompt: Prompt,
}

/// Counts of one batch of jobs.
#[derive(Debug, Default, Clone, Copy)]
pub struct BatchStats {
    pub cached: usize,
    pub requested: usize,
    pub failed: usize,
}

/// Each job's answer, or why it failed, by cache key.
pub type Answers<T> = HashMap<String, Result<T, String>>;

/// Runs the jobs not already in `cache` concurrently; every success is appended to the cache as
/// it arrives (so a killed run resumes where it stopped). Returns key → value or error message.
pub fn run_jobs<T: Serialize + DeserializeOwned + Clone + Send + 'static>(
    client: &Client,
    cache: &mut Cache<T>,
    jobs: Vec<Job>,
    parse: fn(&str) -> Option<T>,
    concurrency: usize,
    progress: &indicatif::ProgressBar,
) -> Result<(Answers<T>, BatchStats)> {
    let mut out = HashMap::with_capacity(jobs.len());
    let mut stats = BatchStats::default();
    let mut todo = Vec::new();
    for job in jobs {
        if let Some(v) = cache.get(&job.key) {
            out.insert(job.key, Ok(v.clone()));
            stats.cached += 1;
            progress.inc(1);
        } else if !out.contains_key(&job.key) {
            out.insert(job.key.clone(), Err(String::new()));
            todo.push(job);
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut results = futures::stream::iter(todo)
            .map(|job| async move {
                let r = client.complete(&job.prompt, parse).await;
                (job.key, r)
            })
            .buffer_unordered(concurrency.max(1));
        while let Some((key, r)) = results.next().await {
            stats.requested += 1;
            match &r {
                Ok(v) => cache.put(&key, v)?,
                Err(_) => stats.failed += 1,
            }
            out.insert(key, r);
            progress.inc(1);
        }
        anyhow::Ok(())
    })?;
    Ok((out, stats))
}
