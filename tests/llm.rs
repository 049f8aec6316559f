//! Both LLM protocols against an in-process server: answers, 500s, timeouts, malformed
//! replies, the cache, and a kill-and-resume of the real binary.

mod common;

use std::time::Duration;

use common::llm_server::{MockLlm, Reply, review_of};
use common::*;
use recsys::Split;
use recsys::etl::keywords::{self, KeywordsConfig, SplitChoice};
use recsys::etl::split::{self, SplitConfig};
use recsys::io::read_parquet;
use recsys::llm::{Backend, LlmArgs};

/// A data root with `n` train reviews "text 0" … "text n-1", already split.
fn split_root(n: usize) -> (tempfile::TempDir, recsys::Ctx) {
    let lines: Vec<String> = (0..n)
        .map(|i| {
            review(
                &format!("B{}", i % 3),
                1_000 + i as i64,
                &format!("text {i}"),
            )
        })
        .collect();
    let (dir, ctx) = data_root(&lines);
    split::run(&ctx, &SplitConfig::default()).unwrap();
    (dir, ctx)
}

fn cfg(backend: Backend, url: &str) -> KeywordsConfig {
    KeywordsConfig {
        split: SplitChoice::Train,
        llm: LlmArgs {
            backend,
            model: Some("test-model".into()),
            url: Some(url.to_string()),
            concurrency: 4,
            retries: 2,
            timeout_s: 2.0,
            api_key: None,
            no_schema: false,
        },
        ..KeywordsConfig::default()
    }
}

/// keywords per review_id, and the failed flags.
fn keywords_of(ctx: &recsys::Ctx) -> (Vec<Vec<String>>, Vec<bool>) {
    let df = read_parquet(&ctx.layout.keywords(Split::Train)).unwrap();
    let lists = df.column("keywords").unwrap().list().unwrap().clone();
    let kws = lists
        .series_iter()
        .map(|s| {
            s.map(|s| s.str().unwrap().no_null_iter().map(String::from).collect())
                .unwrap_or_default()
        })
        .collect();
    let failed = df
        .column("keywords_failed")
        .unwrap()
        .bool()
        .unwrap()
        .no_null_iter()
        .collect();
    (kws, failed)
}

fn echo(user: &str) -> String {
    format!("```json\n[\"{}\", \"Daughter\"]\n```", review_of(user))
}

#[test]
fn ollama_protocol_answers_and_caches() {
    let server = MockLlm::start(|_, user| Reply::Content(echo(user)));
    let url = format!("{}/", server.url);
    let (_dir, ctx) = split_root(6);
    let s = keywords::run(&ctx, &cfg(Backend::Ollama, &url)).unwrap();
    assert_eq!((s.splits[0].requested, s.splits[0].failed), (6, 0));
    let (kws, failed) = keywords_of(&ctx);
    assert_eq!(kws[2], vec!["text 2", "daughter"]);
    assert!(failed.iter().all(|f| !f));
    // a re-run costs nothing: every answer comes from the cache
    let s = keywords::run(&ctx, &cfg(Backend::Ollama, &url)).unwrap();
    assert_eq!(
        (s.splits[0].cached, s.splits[0].requested, server.count()),
        (6, 0, 6)
    );
}

#[test]
fn openai_protocol_retries_500s_and_timeouts() {
    // each review's first request fails (500 or a reply slower than the timeout); retries succeed
    let seen = std::sync::Mutex::new(std::collections::HashSet::new());
    let server = MockLlm::start(move |n, user| {
        let first = seen.lock().unwrap().insert(user.to_string());
        match (first, n % 2) {
            (true, 0) => Reply::Status(500, "overloaded".into()),
            (true, _) => Reply::Slow(Duration::from_millis(4000), echo(user)),
            _ => Reply::Content(echo(user)),
        }
    });
    let (_dir, ctx) = split_root(5);
    let mut c = cfg(Backend::Openai, &format!("{}/v1", server.url));
    c.llm.concurrency = 5;
    let s = keywords::run(&ctx, &c).unwrap();
    assert_eq!(s.splits[0].failed, 0, "{s}");
    assert_eq!(server.count(), 10);
    let (kws, _) = keywords_of(&ctx);
    assert_eq!(kws[4][0], "text 4");
}

#[test]
fn malformed_replies_are_retried_then_recorded_as_failed() {
    // review "text 1" always gets prose; the others get prose once, then JSON
    let seen = std::sync::Mutex::new(std::collections::HashSet::new());
    let server = MockLlm::start(move |_, user| {
        let first = seen.lock().unwrap().insert(user.to_string());
        if review_of(user) == "text 1" || first {
            Reply::Content("Sorry, I can't produce JSON today.".into())
        } else {
            Reply::Content(echo(user))
        }
    });
    let (_dir, ctx) = split_root(3);
    let s = keywords::run(&ctx, &cfg(Backend::Openai, &server.url)).unwrap();
    assert_eq!(s.splits[0].failed, 1);
    assert!(s.to_string().contains("1 failed"), "{s}");
    let (kws, failed) = keywords_of(&ctx);
    assert_eq!(failed, vec![false, true, false]);
    assert!(kws[1].is_empty());
    // 3 attempts for the failing review, 2 for each of the others
    assert_eq!(server.count(), 3 + 2 + 2);
    // failures are not cached: a re-run asks again for that review only
    let before = server.count();
    keywords::run(&ctx, &cfg(Backend::Openai, &server.url)).unwrap();
    assert_eq!(server.count() - before, 3);
}

#[test]
fn client_errors_are_not_retried() {
    let server =
        MockLlm::start(|_, _| Reply::Status(404, "{\"error\": \"model not found\"}".into()));
    let (_dir, ctx) = split_root(2);
    let s = keywords::run(&ctx, &cfg(Backend::Ollama, &server.url)).unwrap();
    assert_eq!((s.splits[0].failed, server.count()), (2, 2));
}

#[test]
fn llm_backend_needs_a_model() {
    let (_dir, ctx) = split_root(1);
    let mut c = cfg(Backend::Ollama, "http://127.0.0.1:9");
    c.llm.model = None;
    let err = keywords::run(&ctx, &c).unwrap_err().to_string();
    assert!(err.contains("--model"), "{err}");
}

#[test]
fn killed_run_resumes_from_the_cache() {
    let server = MockLlm::start(|_, user| Reply::Slow(Duration::from_millis(40), echo(user)));
    let (dir, ctx) = split_root(60);
    let args = |url: &str| {
        vec![
            "--quiet".to_string(),
            "--data-dir".into(),
            dir.path().display().to_string(),
            "etl".into(),
            "keywords".into(),
            "--backend".into(),
            "openai".into(),
            "--model".into(),
            "m".into(),
            "--url".into(),
            url.to_string(),
            "--concurrency".into(),
            "1".into(),
        ]
    };
    let cache = ctx.layout.llm_cache("keywords");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_recsys"))
        .args(args(&server.url))
        .spawn()
        .unwrap();
    let lines = |p: &std::path::Path| {
        std::fs::read_to_string(p)
            .map(|s| s.lines().filter(|l| l.ends_with('}')).count())
            .unwrap_or(0)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while lines(&cache) < 10 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !ctx.layout.keywords(Split::Train).exists(),
        "a killed run must not leave its output"
    );
    let cached = lines(&cache);
    assert!((10..60).contains(&cached), "{cached} cached at the kill");
    let before = server.count();
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_recsys"))
        .args(args(&server.url))
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(
        server.count() - before,
        60 - cached,
        "the resumed run asked again for cached reviews"
    );
    let (kws, failed) = keywords_of(&ctx);
    assert_eq!(kws.len(), 60);
    assert!(failed.iter().all(|f| !f) && kws.iter().all(|k| k.len() == 2));
}

#[test]
fn summaries_come_from_the_llm_and_offline_invents_none() {
    use recsys::etl::build_items::{self, BuildItemsConfig};
    use recsys::etl::summaries::{self, SummariesConfig};
    let server =
        MockLlm::start(|_, _| Reply::Content("[\"gentle cleanser\", \"for oily skin\"]".into()));
    let (dir, ctx) = split_root(3);
    let long = "A long description. ".repeat(40);
    let meta = [
        serde_json::json!({"parent_asin": "B0", "title": "Long one", "description": [long], "features": []}),
        serde_json::json!({"parent_asin": "B1", "title": "Short one", "description": ["Short."], "features": []}),
    ];
    let meta: Vec<String> = meta.iter().map(|m| m.to_string()).collect();
    std::fs::write(
        dir.path().join("raw/meta_All_Beauty.jsonl"),
        meta.join("\n"),
    )
    .unwrap();

    let offline = summaries::run(&ctx, &SummariesConfig::default()).unwrap();
    assert_eq!((offline.long_descriptions, offline.summarised), (1, 0));
    assert!(offline.to_string().contains("no summaries invented"));
    assert_eq!(read_parquet(&ctx.layout.summaries()).unwrap().height(), 0);

    let c = SummariesConfig {
        llm: cfg(Backend::Openai, &server.url).llm,
        ..SummariesConfig::default()
    };
    let s = summaries::run(&ctx, &c).unwrap();
    assert_eq!((s.summarised, s.failed, server.count()), (1, 0, 1));
    build_items::run(&ctx, &BuildItemsConfig::default()).unwrap();
    let items = read_parquet(&ctx.layout.items()).unwrap();
    let text = items
        .column("embedding_text")
        .unwrap()
        .str()
        .unwrap()
        .get(0)
        .unwrap()
        .to_string();
    assert!(
        text.contains("[Description Summary] gentle cleanser; for oily skin"),
        "{text}"
    );
    let short = items
        .column("embedding_text")
        .unwrap()
        .str()
        .unwrap()
        .get(1)
        .unwrap()
        .to_string();
    assert!(short.ends_with("[Description Summary] Short."), "{short}");
}

/// Structured output: the keywords schema goes out as `response_format` (OpenAI-compatible) or
/// `format` (Ollama), with a token cap; `--no-schema` sends neither, and the two are cached apart.
#[test]
fn keyword_requests_carry_the_json_schema() {
    let server = MockLlm::start(|_, _| Reply::Content(r#"{"keywords": ["dry skin"]}"#.into()));
    let (_dir, ctx) = split_root(2);
    let mut c = cfg(Backend::Openai, &format!("{}/v1", server.url));
    c.max_keywords = 7;
    keywords::run(&ctx, &c).unwrap();
    let body = server.last_body.lock().unwrap().clone().unwrap();
    assert_eq!(body["response_format"]["type"], "json_schema");
    assert_eq!(
        body["response_format"]["json_schema"]["schema"],
        keywords::schema(7)
    );
    assert_eq!(
        body["response_format"]["json_schema"]["schema"]["properties"]["keywords"]["maxItems"],
        7
    );
    assert!(body["max_tokens"].as_u64().unwrap() > 0);
    let (kws, _) = keywords_of(&ctx);
    assert_eq!(kws[0], vec!["dry skin".to_string()]);

    // without the schema: a plain request, and not answered from the schema run's cache
    let before = server.count();
    c.llm.no_schema = true;
    keywords::run(&ctx, &c).unwrap();
    assert_eq!(server.count(), before + 2, "the schema answers were reused");
    let body = server.last_body.lock().unwrap().clone().unwrap();
    assert!(body.get("response_format").is_none(), "{body}");

    let (_dir, ctx) = split_root(1);
    let c = cfg(Backend::Ollama, &server.url);
    keywords::run(&ctx, &c).unwrap();
    let body = server.last_body.lock().unwrap().clone().unwrap();
    assert_eq!(body["format"], keywords::schema(c.max_keywords));
    assert!(body["options"]["num_predict"].as_u64().unwrap() > 0);
}
