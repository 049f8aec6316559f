//! Every `sql/*.sql` runs with the DuckDB CLI (installed by `make setup`) on a small pipeline's
//! outputs (ETL, index with the tiny test encoder, dense candidates, a ranker and the re-ranked
//! test split) and returns rows.

mod common;

use common::*;

use std::process::Command;

use recsys::Split;
use recsys::encoder::EncoderArgs;
use recsys::etl::build_items::{self, BuildItemsConfig};
use recsys::etl::pairs::{self, PairsConfig};
use recsys::index::{self, IndexBuildConfig};
use recsys::rank::{self, RankerConfig, RerankConfig};
use recsys::retrieve::{self, RetrieveConfig};

#[test]
fn every_sql_script_returns_rows() {
    if !common::duckdb("sql::every_sql_script_returns_rows") {
        return;
    }
    let (dir, ctx) = synth_root(2_000, 200);
    keywords_all(&ctx);
    build_items::run(&ctx, &BuildItemsConfig::default()).unwrap();
    pairs::run(&ctx, &PairsConfig::default()).unwrap();
    let index_cfg = IndexBuildConfig {
        encoder: EncoderArgs {
            model: fixture("encoder/tiny-bert"),
            max_length: Some(48),
            ..EncoderArgs::default()
        },
        max_items: None,
    };
    index::build(&ctx, &index_cfg).unwrap();
    retrieve::run(&ctx, &RetrieveConfig::default()).unwrap();
    // stage 2 for sql/rerank_gains.sql: candidates of valid, a ranker, rerank
    let cfg = RetrieveConfig {
        split: Split::Valid,
        ..Default::default()
    };
    retrieve::run(&ctx, &cfg).unwrap();
    let ranker = dir.path().join("ranker");
    let ranker_cfg = RankerConfig {
        num_rounds: 10,
        output: Some(ranker.clone()),
        ..Default::default()
    };
    rank::train(&ctx, &ranker_cfg).unwrap();
    let rerank_cfg = RerankConfig {
        split: Split::Test,
        model: Some(ranker),
    };
    rank::rerank(&ctx, &rerank_cfg).unwrap();

    let sql_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sql");
    let mut scripts: Vec<_> = std::fs::read_dir(&sql_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    scripts.sort();
    assert!(scripts.len() >= 8);
    for script in scripts {
        let text = std::fs::read_to_string(&script).unwrap();
        assert!(
            text.starts_with("-- "),
            "{} must open with a comment saying what it answers",
            script.display()
        );
        let out = Command::new("duckdb")
            .args(["-csv", "-c", &format!(".read {}", script.display())])
            .env("RECSYS_DATA_DIR", dir.path())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.trim().is_empty(),
            "{}: {stderr}",
            script.display()
        );
        assert!(
            stdout.lines().count() >= 2,
            "{} returned no rows:\n{stdout}",
            script.display()
        );
    }
}
