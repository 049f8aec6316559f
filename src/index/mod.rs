//! The LanceDB item index: `index build` encodes items.parquet into table `items`
//! (`parent_asin`, `vector`, `embedding_text`, `title` and the other item columns) with a
//! full-text (BM25) index on `embedding_text`; `search` queries it.
//!
//! The table's Arrow schema metadata records the [`ModelInfo`] that produced the vectors, so a
//! query with a different model is refused. A rebuild is written into a staging directory and
//! swapped in by two renames; a crash between them is repaired the next time the index is opened.

pub mod arrow;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use arrow_array::{Array, FixedSizeListArray, Float32Array, RecordBatch, StringArray};
use futures::TryStreamExt;
use lancedb::DistanceType;
use lancedb::index::Index;
use lancedb::index::scalar::{FtsIndexBuilder, FullTextSearchQuery};
use lancedb::index::vector::IvfPqIndexBuilder;
use lancedb::query::{ExecutableQuery, QueryBase, Select};

use crate::cols;
use crate::context::Ctx;
use crate::encoder::{self, Embeddings, Encoder, EncoderArgs, ModelInfo};
use crate::io::{self, thousands};

/// Name of the item table inside `data/lancedb`.
pub const TABLE: &str = "items";
/// Schema-metadata key holding the JSON [`ModelInfo`].
pub const MODEL_KEY: &str = "recsys.model";
/// The vector column.
pub const VECTOR: &str = "vector";

/// `recsys index build`
#[derive(Debug, Clone, Default, clap::Args)]
pub struct IndexBuildConfig {
    #[command(flatten)]
    pub encoder: EncoderArgs,
    /// Encode only the first N items (quick trials; the table then holds only those)
    #[arg(long)]
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

/// A single-threaded-caller runtime for LanceDB's async API.
fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn table_dir(db: &Path) -> PathBuf {
    db.join(format!("{TABLE}.lance"))
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
    write_table(&db, batches)?;
    Ok(BuildSummary {
        items: items.height(),
        model: enc.info,
        texts_per_s: rate,
        encode_s,
        total_s: t0.elapsed().as_secs_f64(),
        table: table_dir(&db),
    })
}

/// Writes the table into `db/.staging-PID`, builds the full-text index there, then swaps it in.
fn write_table(db: &Path, batches: Vec<RecordBatch>) -> Result<()> {
    std::fs::create_dir_all(db).with_context(|| format!("creating {}", db.display()))?;
    recover(db)?;
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
        let table = conn.create_table(TABLE, batches).execute().await?;
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
    let live = table_dir(db);
    let old = db.join(format!(".{TABLE}.lance.old-{}", std::process::id()));
    if live.exists() {
        std::fs::rename(&live, &old).with_context(|| format!("moving {} aside", live.display()))?;
    }
    std::fs::rename(table_dir(&staging), &live)
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

/// A crash between the two renames of `write_table` leaves only `.items.lance.old-PID`:
/// put it back.
fn recover(db: &Path) -> Result<()> {
    let live = table_dir(db);
    if live.exists() || !db.is_dir() {
        return Ok(());
    }
    let prefix = format!(".{TABLE}.lance.old-");
    let old = std::fs::read_dir(db)?
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with(&prefix));
    if let Some(e) = old {
        eprintln!(
            "note: an interrupted index build left the previous table at {}; restoring it",
            e.path().display()
        );
        std::fs::rename(e.path(), &live)
            .with_context(|| format!("restoring {}", live.display()))?;
    }
    Ok(())
}

/// Search-time settings of the IVF-PQ index.
#[derive(Debug, Clone, Copy)]
pub struct AnnParams {
    pub nprobes: usize,
    pub refine_factor: u32,
}

/// One result row of a search.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub parent_asin: String,
    pub title: String,
    /// Cosine similarity (dense) or BM25 score (full text).
    pub score: f32,
}

/// An opened item table and the model its vectors came from.
pub struct ItemIndex {
    rt: tokio::runtime::Runtime,
    table: lancedb::Table,
    pub info: ModelInfo,
    pub rows: usize,
    pub path: PathBuf,
}

impl ItemIndex {
    /// Opens `data/lancedb/items.lance`, with a clear error when it was never built.
    pub fn open(ctx: &Ctx) -> Result<Self> {
        let db = ctx.layout.lancedb_dir();
        recover(&db)?;
        let path = table_dir(&db);
        if !path.is_dir() {
            bail!(
                "{} not found: build the item index first with `recsys index build`",
                path.display()
            );
        }
        let rt = runtime()?;
        let (table, schema, rows) = rt
            .block_on(async {
                let conn = lancedb::connect(&db.to_string_lossy()).execute().await?;
                let table = conn.open_table(TABLE).execute().await?;
                let schema = table.schema().await?;
                let rows = table.count_rows(None).await?;
                anyhow::Ok((table, schema, rows))
            })
            .with_context(|| format!("opening {}", path.display()))?;
        let info: ModelInfo = schema
            .metadata()
            .get(MODEL_KEY)
            .with_context(|| {
                format!(
                    "{}: the table does not record its model (schema metadata {MODEL_KEY}); \
                     rebuild it with `recsys index build`",
                    path.display()
                )
            })
            .and_then(|s| {
                serde_json::from_str(s)
                    .with_context(|| format!("{}: unreadable {MODEL_KEY} metadata", path.display()))
            })?;
        Ok(ItemIndex {
            rt,
            table,
            info,
            rows,
            path,
        })
    }

    /// Loads the encoder that queries this index: `model` (or, when `None`, the one recorded
    /// with the table), refusing one that embeds differently.
    pub fn query_encoder(
        &self,
        model: Option<&Path>,
        device: encoder::DeviceKind,
    ) -> Result<Encoder> {
        let path = model.map_or_else(|| PathBuf::from(&self.info.path), Path::to_path_buf);
        let enc = Encoder::load(&EncoderArgs {
            model: path,
            max_length: Some(self.info.max_length),
            pooling: Some(self.info.pooling),
            device,
            ..EncoderArgs::default()
        })
        .with_context(|| {
            format!(
                "loading the query encoder (the index was built with {}; pass --model DIR if it moved)",
                self.info.path
            )
        })?;
        self.info
            .ensure_same(&enc.info, &format!("the index {}", self.path.display()))?;
        Ok(enc)
    }

    /// Exact nearest items by cosine similarity (LanceDB flat search, even when an ANN index
    /// exists).
    pub fn search_vector(&self, vector: &[f32], k: usize) -> Result<Vec<Hit>> {
        anyhow::ensure!(
            vector.len() == self.info.dim,
            "query vector has {} dims, the index {}",
            vector.len(),
            self.info.dim
        );
        self.rt.block_on(self.nearest(vector, k, None))
    }

    /// Nearest items by dot product (= cosine: vectors are unit length): through the vector
    /// index with `ann`, else exact (bypassing any index).
    async fn nearest(&self, vector: &[f32], k: usize, ann: Option<AnnParams>) -> Result<Vec<Hit>> {
        let mut q = self
            .table
            .query()
            .nearest_to(vector)?
            .distance_type(DistanceType::Dot)
            .limit(k)
            .select(Select::columns(&[cols::PARENT_ASIN, cols::TITLE]));
        match ann {
            None => q = q.bypass_vector_index(),
            Some(p) => {
                q = q.nprobes(p.nprobes)?;
                if p.refine_factor > 0 {
                    q = q.refine_factor(p.refine_factor);
                }
            }
        }
        // LanceDB's dot distance is 1 − a·b.
        hits(&collect(q).await?, "_distance", |d| 1.0 - d)
    }

    /// Builds the IVF-PQ vector index (dot product) unless the table has one; true when built.
    pub fn ensure_vector_index(&self) -> Result<bool> {
        self.rt.block_on(async {
            let has = self
                .table
                .list_indices()
                .await?
                .iter()
                .any(|i| i.columns.iter().any(|c| c == VECTOR));
            if has {
                return Ok(false);
            }
            anyhow::ensure!(
                self.rows >= 256,
                "--ann: an IVF-PQ index needs at least 256 items to train on; the table has {}",
                self.rows
            );
            let params = IvfPqIndexBuilder::default().distance_type(DistanceType::Dot);
            self.table
                .create_index(&[VECTOR], Index::IvfPq(params))
                .execute()
                .await?;
            Ok(true)
        })
    }

    /// Approximate nearest items through the vector index, many queries in flight; hits in
    /// query order. `pb` advances per query.
    pub fn search_vectors_ann(
        &self,
        queries: &Embeddings,
        k: usize,
        params: AnnParams,
        pb: &indicatif::ProgressBar,
    ) -> Result<Vec<Vec<Hit>>> {
        use futures::StreamExt;
        let in_flight = 2 * std::thread::available_parallelism().map_or(2, |n| n.get());
        self.rt.block_on(async {
            futures::stream::iter((0..queries.len()).map(|i| async move {
                let r = self.nearest(queries.row(i), k, Some(params)).await;
                pb.inc(1);
                r
            }))
            .buffered(in_flight)
            .try_collect::<Vec<_>>()
            .await
        })
    }

    /// Every item's `parent_asin`, in table order, with its vector when `with_vectors` (the
    /// BM25 and popularity retrievers need only the ids; `data` is then empty).
    pub fn items(&self, with_vectors: bool) -> Result<(Vec<String>, Embeddings)> {
        let columns: &[&str] = if with_vectors {
            &[cols::PARENT_ASIN, VECTOR]
        } else {
            &[cols::PARENT_ASIN]
        };
        let query = self.table.query().select(Select::columns(columns));
        let batches = self.rt.block_on(collect(query))?;
        let dim = self.info.dim;
        let (mut asins, mut data) = (Vec::with_capacity(self.rows), Vec::new());
        for b in &batches {
            let a = b
                .column_by_name(cols::PARENT_ASIN)
                .and_then(|c| c.as_any().downcast_ref::<StringArray>())
                .context("parent_asin column missing or not a string")?;
            asins.extend(a.iter().map(|x| x.unwrap_or_default().to_string()));
            if !with_vectors {
                continue;
            }
            let v = b
                .column_by_name(VECTOR)
                .and_then(|c| c.as_any().downcast_ref::<FixedSizeListArray>())
                .context("vector column missing or not a fixed-size list")?;
            let values = v
                .values()
                .as_any()
                .downcast_ref::<Float32Array>()
                .context("vector values are not f32")?;
            let start = v.offset() * dim;
            data.extend_from_slice(&values.values()[start..start + v.len() * dim]);
        }
        let emb = Embeddings { dim, data };
        anyhow::ensure!(
            !with_vectors || emb.len() == asins.len(),
            "one vector per item"
        );
        Ok((asins, emb))
    }

    /// BM25 full-text search over `embedding_text`.
    pub fn search_text(&self, query: &str, k: usize) -> Result<Vec<Hit>> {
        let batches = self.rt.block_on(self.fts(query, k))?;
        hits(&batches, "_score", |s| s)
    }

    /// [`search_text`](Self::search_text) for many queries, several in flight at once;
    /// results in query order. `pb` advances per query.
    pub fn search_text_many(
        &self,
        queries: &[&str],
        k: usize,
        pb: &indicatif::ProgressBar,
    ) -> Result<Vec<Vec<Hit>>> {
        use futures::StreamExt;
        let in_flight = 2 * std::thread::available_parallelism().map_or(2, |n| n.get());
        self.rt.block_on(async {
            futures::stream::iter(queries.iter().map(|q| async move {
                let r = self.fts(q, k).await;
                pb.inc(1);
                r.and_then(|b| hits(&b, "_score", |s| s))
            }))
            .buffered(in_flight)
            .try_collect::<Vec<_>>()
            .await
        })
    }

    async fn fts(&self, query: &str, k: usize) -> Result<Vec<RecordBatch>> {
        let q = self
            .table
            .query()
            .full_text_search(FullTextSearchQuery::new(query.to_string()))
            .limit(k)
            .select(Select::columns(&[cols::PARENT_ASIN, cols::TITLE]));
        collect(q).await
    }
}

/// Runs a LanceDB query and gathers its record batches.
async fn collect(query: impl ExecutableQuery) -> Result<Vec<RecordBatch>> {
    Ok(query.execute().await?.try_collect::<Vec<_>>().await?)
}

fn hits(batches: &[RecordBatch], score_col: &str, score: impl Fn(f32) -> f32) -> Result<Vec<Hit>> {
    let mut out = Vec::new();
    for b in batches {
        let get = |name: &str| {
            b.column_by_name(name)
                .with_context(|| format!("search result lacks column {name}"))
        };
        let asin = get(cols::PARENT_ASIN)?;
        let asin = asin
            .as_any()
            .downcast_ref::<StringArray>()
            .context("parent_asin is not a string column")?;
        let title = get(cols::TITLE)?;
        let title = title
            .as_any()
            .downcast_ref::<StringArray>()
            .context("title is not a string column")?;
        let s = get(score_col)?;
        let s = s
            .as_any()
            .downcast_ref::<Float32Array>()
            .with_context(|| format!("{score_col} is not f32"))?;
        for i in 0..b.num_rows() {
            out.push(Hit {
                parent_asin: asin.value(i).to_string(),
                title: if title.is_null(i) {
                    String::new()
                } else {
                    title.value(i).to_string()
                },
                score: score(s.value(i)),
            });
        }
    }
    out.sort_by(|a, b| b.score.total_cmp(&a.score));
    Ok(out)
}

/// How `recsys search` ranks items.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum SearchMode {
    /// Encoder vectors, cosine similarity
    #[default]
    Dense,
    /// BM25 over embedding_text
    Bm25,
}

/// `recsys search`
#[derive(Debug, Clone, clap::Args)]
pub struct SearchConfig {
    /// What you are looking for, in your own words
    pub query: String,
    /// How many items to show
    #[arg(short, default_value_t = 10)]
    pub k: usize,
    /// Query encoder [default: the model the index was built with]; must embed like it
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Ranking: dense vectors or BM25 full text
    #[arg(long, value_enum, default_value_t = SearchMode::Dense)]
    pub mode: SearchMode,
    /// Where to run the query encoder
    #[arg(long, value_enum, default_value_t = encoder::DeviceKind::Cpu)]
    pub device: encoder::DeviceKind,
}

pub struct SearchResult {
    pub query: String,
    pub mode: SearchMode,
    pub model: String,
    pub hits: Vec<Hit>,
}

impl fmt::Display for SearchResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let how = match self.mode {
            SearchMode::Dense => format!("dense, {}", self.model),
            SearchMode::Bm25 => "bm25".to_string(),
        };
        writeln!(
            f,
            "search {:?} ({how}): top {}",
            self.query,
            self.hits.len()
        )?;
        writeln!(
            f,
            "{:>4}  {:>7}  {:<12}  title",
            "rank", "score", "parent_asin"
        )?;
        for (i, h) in self.hits.iter().enumerate() {
            let title: String = h.title.chars().take(90).collect();
            writeln!(
                f,
                "{:>4}  {:>7.4}  {:<12}  {title}",
                i + 1,
                h.score,
                h.parent_asin
            )?;
        }
        Ok(())
    }
}

/// `recsys search`: top-k items for one query.
pub fn search(ctx: &Ctx, cfg: &SearchConfig) -> Result<SearchResult> {
    anyhow::ensure!(cfg.k > 0, "-k must be at least 1");
    let index = ItemIndex::open(ctx)?;
    let hits = match cfg.mode {
        SearchMode::Dense => {
            let enc = index.query_encoder(cfg.model.as_deref(), cfg.device)?;
            let v = enc.encode(&[cfg.query.as_str()], 1, &indicatif::ProgressBar::hidden())?;
            index.search_vector(v.row(0), cfg.k)?
        }
        SearchMode::Bm25 => index.search_text(&cfg.query, cfg.k)?,
    };
    Ok(SearchResult {
        query: cfg.query.clone(),
        mode: cfg.mode,
        model: index.info.name.clone(),
        hits,
    })
}

/// Schema metadata for a table built by `info`.
pub fn model_metadata(info: &ModelInfo) -> Result<HashMap<String, String>> {
    Ok(HashMap::from([(
        MODEL_KEY.to_string(),
        serde_json::to_string(info)?,
    )]))
}
