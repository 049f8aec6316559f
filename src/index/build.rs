//! `recsys index build`: items.parquet → LanceDB table `items` (+ BM25 index), atomically.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use arrow_array::RecordBatch;
use lancedb::index::Index;
use lancedb::index::scalar::FtsIndexBuilder;

use super::{arrow, recover, runtime, table_dir};
use crate::cols;
use crate::context::Ctx;
use crate::encoder::{self, Encoder, EncoderArgs, ModelInfo};
use crate::io::{self, thousands};

/// `recsys index build`
#[derive(Debug, Clone, Default, clap::Args, serde::Serialize)]
pub struct IndexBuildConfig {
    #[command(flatten)]
    pub encoder: EncoderArgs,
    /// Encode only the first N items (quick trials; the table then holds only those)
    #[arg(long, value_parser = crate::cli::count)]
    pub max_items: Option<usize>,
}

#[derive(Debug)]
pub struct BuildSummary {
    pub items: usize,
    pub model: ModelInfo,
    pub texts_per_s: f64,
    pub encode_s: f64,
    pub total_s: f64,
    pub table: PathBuf,
}

impl fmt::Display for BuildSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "index build: {} items encoded with {} ({}, {} pooling, dim {}, max {} tokens) in \
             {:.1}s ({:.1} texts/s); table + full-text index written in {:.1}s total → {}",
            thousands(self.items),
            self.model.name,
            self.model.architecture.class_name(),
            self.model.pooling,
            self.model.dim,
            self.model.max_length,
            self.encode_s,
            self.texts_per_s,
            self.total_s,
            self.table.display()
        )
    }
}

/// `recsys index build`: items.parquet → LanceDB table `items` (+ BM25 index), atomically.
pub fn build(ctx: &Ctx, cfg: &IndexBuildConfig) -> Result<BuildSummary> {
    let t0 = Instant::now();
    let items_path = ctx.layout.items();
    let mut items = io::read_parquet(&items_path)?;
    if let Some(n) = cfg.max_items {
        items = items.head(Some(n));
    }
    anyhow::ensure!(
        items.height() > 0,
        "{}: no items to index",
        items_path.display()
    );
    let texts: Vec<String> = {
        let col = Context::with_context(items.column(cols::EMBEDDING_TEXT), || {
            format!(
                "{}: no column {}",
                items_path.display(),
                cols::EMBEDDING_TEXT
            )
        })?;
        let s = col.str().with_context(|| {
            format!(
                "{}: column {} is not a string",
                items_path.display(),
                cols::EMBEDDING_TEXT
            )
        })?;
        s.iter().map(|t| t.unwrap_or("").to_string()).collect()
    };
    let enc = Encoder::load(&cfg.encoder)?;
    let t_enc = Instant::now();
    let (vectors, rate) = encoder::encode_all(
        &enc,
        &texts,
        cfg.encoder.batch_size,
        "encoding items",
        ctx.quiet,
    )?;
    let encode_s = t_enc.elapsed().as_secs_f64();
    let batches = arrow::item_batches(&items, &items_path, &vectors, &enc.info)?;
    let db = ctx.layout.lancedb_dir();
    let table = ctx.layout.index_table();
    write_table(&db, &table, batches)?;
    Ok(BuildSummary {
        items: items.height(),
        model: enc.info,
        texts_per_s: rate,
        encode_s,
        total_s: t0.elapsed().as_secs_f64(),
        table: table_dir(&db, &table),
    })
}

/// Writes the table into `db/.staging-PID`, builds the full-text index there, then swaps it in.
fn write_table(db: &Path, name: &str, batches: Vec<RecordBatch>) -> Result<()> {
    std::fs::create_dir_all(db).with_context(|| format!("creating {}", db.display()))?;
    recover(db, name)?;
    for e in std::fs::read_dir(db)?.flatten() {
        // leftovers of a crashed build (never the live table)
        if e.file_name().to_string_lossy().starts_with(".staging-") {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
    let staging = db.join(format!(".staging-{}", std::process::id()));
    let staged = Staging(staging.clone());
    let rt = runtime()?;
    rt.block_on(async {
        let conn = lancedb::connect(&staging.to_string_lossy())
            .execute()
            .await?;
        let table = conn.create_table(name, batches).execute().await?;
        table
            .create_index(
                &[crate::cols::EMBEDDING_TEXT],
                Index::FTS(FtsIndexBuilder::default()),
            )
            .execute()
            .await?;
        anyhow::Ok(())
    })
    .with_context(|| format!("writing the LanceDB table under {}", staging.display()))?;
    let live = table_dir(db, name);
    let old = db.join(format!(".{name}.lance.old-{}", std::process::id()));
    if live.exists() {
        std::fs::rename(&live, &old).with_context(|| format!("moving {} aside", live.display()))?;
    }
    std::fs::rename(table_dir(&staging, name), &live)
        .with_context(|| format!("moving the new table to {}", live.display()))?;
    drop(staged);
    if old.exists() {
        std::fs::remove_dir_all(&old).with_context(|| format!("removing {}", old.display()))?;
    }
    Ok(())
}

/// Removes the staging directory however `write_table` ends.
struct Staging(PathBuf);
impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
