//! The LanceDB item index: `index build` encodes items.parquet into table `items`
//! (`parent_asin`, `vector`, `embedding_text`, `title` and the other item columns) with a
//! full-text (BM25) index on `embedding_text`; `search` queries it.
//!
//! The table's Arrow schema metadata records the [`ModelInfo`] that produced the vectors, so a
//! query with a different model is refused. A rebuild is written into a staging directory and
//! swapped in by two renames; a crash between them is repaired the next time the index is opened.

pub mod arrow;
mod build;
mod search;

pub use build::{BuildSummary, IndexBuildConfig, build};
pub use search::{SearchConfig, SearchMode, SearchResult, search};

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use arrow_array::{Array, FixedSizeListArray, Float32Array, RecordBatch, StringArray};
use futures::TryStreamExt;
use lancedb::DistanceType;
use lancedb::index::Index;
use lancedb::index::scalar::FullTextSearchQuery;
use lancedb::index::vector::IvfPqIndexBuilder;
use lancedb::query::{ExecutableQuery, QueryBase, Select};

use crate::cols;
use crate::context::Ctx;
use crate::encoder::{self, Embeddings, Encoder, EncoderArgs, ModelInfo};

/// Name of the default item table inside `data/lancedb` (a named index is `items_{name}`).
pub use crate::layout::TABLE;

/// Bumped when a change to this stage's logic changes what it writes: the pipeline's records
/// made with another version are stale, so the stage runs again.
pub const CODE_VERSION: u32 = 1;
/// Schema-metadata key holding the JSON [`ModelInfo`].
pub const MODEL_KEY: &str = "recsys.model";
/// The vector column.
pub const VECTOR: &str = "vector";

/// A single-threaded-caller runtime for LanceDB's async API.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

pub(crate) fn table_dir(db: &Path, table: &str) -> PathBuf {
    db.join(format!("{table}.lance"))
}

/// A crash between the two renames of `write_table` leaves only `.{table}.lance.old-PID`:
/// put it back.
pub(crate) fn recover(db: &Path, table: &str) -> Result<()> {
    let live = table_dir(db, table);
    if live.exists() || !db.is_dir() {
        return Ok(());
    }
    let prefix = format!(".{table}.lance.old-");
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
    /// Opens `data/lancedb/items.lance` (or the `--index` named one), with a clear error when it
    /// was never built.
    pub fn open(ctx: &Ctx) -> Result<Self> {
        let db = ctx.layout.lancedb_dir();
        let name = ctx.layout.index_table();
        recover(&db, &name)?;
        let path = table_dir(&db, &name);
        if !path.is_dir() {
            let how = match &ctx.layout.index {
                Some(n) => format!("recsys --index {n} index build"),
                None => "recsys index build".to_string(),
            };
            bail!(
                "{} not found: build the item index first with `{how}`",
                path.display()
            );
        }
        let rt = runtime()?;
        let (table, schema, rows) = rt
            .block_on(async {
                let conn = lancedb::connect(&db.to_string_lossy()).execute().await?;
                let table = conn.open_table(&name).execute().await?;
                let schema = table.schema().await?;
                let rows = table.count_rows(None).await?;
                anyhow::Ok((table, schema, rows))
            })
            .with_context(|| {
                format!(
                    "opening {}: {}",
                    path.display(),
                    crate::io::remake(&path, "not a readable LanceDB table")
                )
            })?;
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
        let stored = match schema.field_with_name(VECTOR).map(|f| f.data_type()) {
            Ok(arrow_schema::DataType::FixedSizeList(_, n)) => usize::try_from(*n).ok(),
            _ => None,
        };
        if stored != Some(info.dim) || info.dim == 0 {
            bail!(
                "{}: the table records {}-dimensional vectors but its `{VECTOR}` column holds {}; \
                 rebuild it with `recsys pipeline --force index` (or `recsys index build`)",
                path.display(),
                info.dim,
                stored.map_or("no fixed-size vectors".to_string(), |n| format!(
                    "{n} per row"
                ))
            );
        }
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
        runtime: encoder::DeviceArgs,
    ) -> Result<Encoder> {
        let path = model.map_or_else(|| PathBuf::from(&self.info.path), Path::to_path_buf);
        let enc = Encoder::load(&EncoderArgs {
            model: path,
            max_length: Some(self.info.max_length),
            pooling: Some(self.info.pooling),
            runtime,
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
            let rows = values
                .values()
                .get(start..start + v.len() * dim)
                .with_context(|| {
                    format!(
                        "{}: vector column shorter than its rows",
                        self.path.display()
                    )
                })?;
            data.extend_from_slice(rows);
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

/// Schema metadata for a table built by `info`.
pub fn model_metadata(info: &ModelInfo) -> Result<HashMap<String, String>> {
    Ok(HashMap::from([(
        MODEL_KEY.to_string(),
        serde_json::to_string(info)?,
    )]))
}
