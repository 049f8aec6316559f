//! `index build` and `search` on a small synthetic root with the tiny committed encoders.

mod common;

use std::path::PathBuf;

use recsys::Ctx;
use recsys::encoder::{EncoderArgs, Pooling, QueryEncoderArgs};
use recsys::etl::build_items::{self, BuildItemsConfig};
use recsys::index::{self, IndexBuildConfig, ItemIndex, SearchConfig, SearchMode};

fn tiny(name: &str) -> PathBuf {
    common::fixture("encoder").join(name)
}

fn build_cfg(model: PathBuf) -> IndexBuildConfig {
    IndexBuildConfig {
        encoder: EncoderArgs {
            model,
            max_length: Some(48),
            batch_size: 16,
            ..EncoderArgs::default()
        },
        max_items: None,
    }
}

fn root_with_items() -> (tempfile::TempDir, Ctx) {
    let (dir, ctx) = common::synth_root(1_500, 150);
    build_items::run(&ctx, &BuildItemsConfig::default()).unwrap();
    (dir, ctx)
}

fn search_cfg(query: &str, k: usize, mode: SearchMode, model: Option<PathBuf>) -> SearchConfig {
    SearchConfig {
        query: query.to_string(),
        k,
        encoder: QueryEncoderArgs {
            model,
            ..Default::default()
        },
        mode,
    }
}

#[test]
fn build_records_model_and_searches() {
    let (_dir, ctx) = root_with_items();
    let s = index::build(&ctx, &build_cfg(tiny("tiny-bert"))).unwrap();
    assert_eq!(s.items, 150);
    let idx = ItemIndex::open(&ctx).unwrap();
    assert_eq!(idx.rows, 150);
    assert_eq!(idx.info.name, "tiny-bert");
    assert_eq!(idx.info.dim, 32);
    assert_eq!(idx.info.pooling, Pooling::Mean);
    assert_eq!(idx.info.max_length, 48);

    // Each stored vector is the encoder's vector of that item's embedding_text: querying with an
    // item's own text finds it at cosine 1.
    let items = recsys::io::read_parquet(&ctx.layout.items()).unwrap();
    let strings = |name: &str| -> Vec<String> {
        let c = items.column(name).unwrap().str().unwrap().clone();
        c.iter().map(|t| t.unwrap().to_string()).collect()
    };
    let (texts, asins) = (strings("embedding_text"), strings("parent_asin"));
    let enc = idx.query_encoder(None, Default::default()).unwrap();
    let pb = indicatif::ProgressBar::hidden();
    for i in [0, 77, 149] {
        let v = enc.encode(&[texts[i].as_str()], 1, &pb).unwrap();
        let hits = idx.search_vector(v.row(0), 5).unwrap();
        assert_eq!(hits.len(), 5);
        assert!(hits.windows(2).all(|w| w[0].score >= w[1].score), "sorted");
        let top = hits[0].score;
        assert!((top - 1.0).abs() < 1e-4, "self-similarity {top}");
        assert!(
            hits.iter()
                .any(|h| h.parent_asin == asins[i] && (h.score - top).abs() < 1e-5),
            "item {i} ({}) not at the top: {hits:?}",
            asins[i]
        );
    }

    // The same through the command entry point, dense and BM25.
    let r = index::search(&ctx, &search_cfg(&texts[3], 7, SearchMode::Dense, None)).unwrap();
    assert_eq!(r.hits.len(), 7);
    assert!(r.to_string().contains("parent_asin"));
    let word = texts[3]
        .split(|c: char| !c.is_alphanumeric())
        .find(|w| w.len() > 5)
        .unwrap()
        .to_string();
    let r = index::search(&ctx, &search_cfg(&word, 5, SearchMode::Bm25, None)).unwrap();
    assert!(!r.hits.is_empty(), "BM25 finds {word:?}");
    assert!(r.hits.iter().all(|h| h.score > 0.0));
}

#[test]
fn a_different_query_model_is_refused() {
    let (_dir, ctx) = root_with_items();
    index::build(&ctx, &build_cfg(tiny("tiny-bert"))).unwrap();
    let e = index::search(
        &ctx,
        &search_cfg("x", 3, SearchMode::Dense, Some(tiny("tiny-xlmr"))),
    )
    .err()
    .map(|e| format!("{e:#}"))
    .unwrap();
    assert!(
        e.contains("tiny-bert") && e.contains("tiny-xlmr") && e.contains("index build"),
        "{e}"
    );
}

#[test]
fn rebuild_replaces_the_table_and_a_torn_swap_is_repaired() {
    let (_dir, ctx) = root_with_items();
    index::build(&ctx, &build_cfg(tiny("tiny-bert"))).unwrap();
    let mut cfg = build_cfg(tiny("tiny-xlmr"));
    cfg.max_items = Some(40);
    index::build(&ctx, &cfg).unwrap();
    let idx = ItemIndex::open(&ctx).unwrap();
    assert_eq!((idx.rows, idx.info.name.as_str()), (40, "tiny-xlmr"));
    drop(idx);
    let db = ctx.layout.lancedb_dir();
    let names = common::files_under(&db);
    assert!(
        names.iter().all(|n| n.starts_with("items.lance/")),
        "only the live table remains: {names:?}"
    );
    // A crash after the live table was moved aside and before the new one arrived.
    std::fs::rename(db.join("items.lance"), db.join(".items.lance.old-999")).unwrap();
    let idx = ItemIndex::open(&ctx).unwrap();
    assert_eq!(idx.rows, 40);
    assert!(db.join("items.lance").is_dir());
}

#[test]
fn missing_index_and_items_are_explained() {
    let (_dir, ctx) = common::synth_root(300, 30);
    let e = ItemIndex::open(&ctx).err().unwrap().to_string();
    assert!(e.contains("recsys index build"), "{e}");
    let e = index::build(&ctx, &build_cfg(tiny("tiny-bert")))
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("items.parquet") && e.contains("not found"),
        "{e}"
    );
}

#[test]
fn a_damaged_index_table_is_named_with_the_stage_that_remakes_it() {
    let (_dir, ctx) = root_with_items();
    index::build(&ctx, &build_cfg(tiny("tiny-bert"))).unwrap();
    let table = ctx.layout.lancedb_dir().join("items.lance");
    let versions = table.join("_versions");
    for e in std::fs::read_dir(&versions).unwrap() {
        std::fs::write(e.unwrap().path(), b"not a manifest").unwrap();
    }
    let err = format!(
        "{:#}",
        ItemIndex::open(&ctx).err().expect("opened a damaged table")
    );
    assert!(
        err.contains(&table.display().to_string())
            && err.contains("re-make it with `recsys pipeline --force index`"),
        "{err}"
    );
}

#[test]
fn a_table_whose_recorded_dim_disagrees_with_its_vectors_is_refused() {
    let (_dir, ctx) = root_with_items();
    index::build(&ctx, &build_cfg(tiny("tiny-bert"))).unwrap();
    let info = ItemIndex::open(&ctx).unwrap().info;
    // The same items and model record, with vectors of half the recorded width.
    let items = recsys::io::read_parquet(&ctx.layout.items()).unwrap();
    let half = info.dim / 2;
    let vectors = recsys::encoder::Embeddings {
        dim: half,
        data: vec![0.5; items.height() * half],
    };
    let batches =
        recsys::index::arrow::item_batches(&items, &ctx.layout.items(), &vectors, &info).unwrap();
    let db = ctx.layout.lancedb_dir();
    std::fs::remove_dir_all(db.join("items.lance")).unwrap();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let conn = lancedb::connect(&db.to_string_lossy())
            .execute()
            .await
            .unwrap();
        conn.create_table("items", batches).execute().await.unwrap();
    });
    let err = format!(
        "{:#}",
        ItemIndex::open(&ctx)
            .err()
            .expect("opened a mismatched table")
    );
    assert!(
        err.contains(&format!(
            "records {}-dimensional vectors but its `vector` column holds {half} per row",
            info.dim
        )) && err.contains("recsys pipeline --force index"),
        "{err}"
    );
}
