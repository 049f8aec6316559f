//! `etl keywords` against a real LLM server: llama.cpp's `llama-server` running
//! SmolLM2-135M-Instruct (`make llm` builds both), on 50 real reviews from `../shared/data/`.
//! Structured output (a JSON schema) makes every reply parseable; the cache answers a second
//! run; a server killed mid-run leaves counted failures that a re-run after a restart resolves.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::llama::{Llama, keywords_cfg, llama_files};
use common::*;
use recsys::Split;
use recsys::etl::keywords::{self, KeywordsConfig, KeywordsSummary};

const REVIEWS: usize = 50;

/// A data root with the first 50 real reviews, split 40 / 5 / 5 by time.
fn real_root(shared: &Path) -> (tempfile::TempDir, recsys::Ctx) {
    let lines: Vec<String> = std::fs::read_to_string(shared)
        .unwrap()
        .lines()
        .take(REVIEWS)
        .map(String::from)
        .collect();
    let (dir, ctx) = data_root(&lines);
    split_by_quantiles(&ctx);
    (dir, ctx)
}

fn cfg(url: &str, concurrency: usize) -> KeywordsConfig {
    let mut c = keywords_cfg(url, concurrency);
    c.llm.retries = 2;
    c.max_keywords = 8;
    c
}

fn total(s: &KeywordsSummary, f: impl Fn(&keywords::SplitKeywords) -> usize) -> usize {
    s.splits.iter().map(f).sum()
}

fn cache_lines(ctx: &recsys::Ctx) -> usize {
    std::fs::read_to_string(ctx.layout.llm_cache("keywords"))
        .map(|t| t.lines().filter(|l| !l.trim().is_empty()).count())
        .unwrap_or(0)
}

#[test]
fn keywords_from_a_real_llm_server() {
    const TEST: &str = "llm_real::keywords_from_a_real_llm_server";
    let llama = llama_files().map_err(|why| skip(TEST, &why)).ok();
    let (Some(shared), Some(_)) = (shared_reviews(TEST), llama) else {
        return;
    };
    let (_dir, ctx) = real_root(&shared);
    let mut server = Llama::start(4);

    // every review answered, every reply parsed (the schema), all of it cached
    let t0 = Instant::now();
    let s = keywords::run(&ctx, &cfg(&server.url, 4)).unwrap();
    eprintln!(
        "{s}\n({REVIEWS} reviews in {:.1}s)",
        t0.elapsed().as_secs_f64()
    );
    assert_eq!(total(&s, |x| x.reviews), REVIEWS);
    assert_eq!(total(&s, |x| x.failed), 0, "a reply failed to parse: {s}");
    assert_eq!(total(&s, |x| x.requested), REVIEWS);
    assert!(
        total(&s, |x| x.with_keywords) >= REVIEWS * 9 / 10,
        "most reviews should get keywords: {s}"
    );
    assert_eq!(cache_lines(&ctx), REVIEWS);
    let first: Vec<_> = Split::ALL
        .iter()
        .map(|&sp| recsys::io::read_parquet(&ctx.layout.keywords(sp)).unwrap())
        .collect();

    // a second run asks nothing and writes the same keywords
    let again = keywords::run(&ctx, &cfg(&server.url, 4)).unwrap();
    assert_eq!(total(&again, |x| x.requested), 0, "{again}");
    assert_eq!(total(&again, |x| x.cached), REVIEWS);
    for (sp, before) in Split::ALL.iter().zip(&first) {
        let after = recsys::io::read_parquet(&ctx.layout.keywords(*sp)).unwrap();
        assert!(after.equals_missing(before), "{sp} keywords changed");
    }

    // the server dies mid-run: answers so far are kept, the rest are counted failures ...
    std::fs::remove_file(ctx.layout.llm_cache("keywords")).unwrap();
    let run = {
        let (ctx, url) = (ctx.clone(), server.url.clone());
        std::thread::spawn(move || {
            let mut c = cfg(&url, 1);
            c.llm.retries = 1;
            keywords::run(&ctx, &c)
        })
    };
    let t0 = Instant::now();
    while cache_lines(&ctx) < 5 {
        assert!(t0.elapsed() < Duration::from_secs(300), "no answer arrived");
        std::thread::sleep(Duration::from_millis(100));
    }
    server.kill();
    let cut = run.join().unwrap().unwrap();
    let (answered, failed) = (
        total(&cut, |x| x.requested - x.failed),
        total(&cut, |x| x.failed),
    );
    eprintln!("killed mid-run: {cut}");
    assert!(failed > 0 && answered >= 5, "{cut}");
    assert_eq!(cache_lines(&ctx), answered);

    // ... and after a restart, a re-run asks only for those
    let server = Llama::start(4);
    let resumed = keywords::run(&ctx, &cfg(&server.url, 4)).unwrap();
    eprintln!("resumed: {resumed}");
    assert_eq!(total(&resumed, |x| x.cached), answered);
    assert_eq!(total(&resumed, |x| x.requested), failed);
    assert_eq!(total(&resumed, |x| x.failed), 0, "{resumed}");
    assert_eq!(cache_lines(&ctx), REVIEWS);
}
