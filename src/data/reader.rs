//! Readers for raw `.jsonl` / `.jsonl.gz` files: parallel parsing, exact error positions,
//! optional skipping of bad lines, and conversion to Polars frames.

use std::io::BufRead;
use std::path::Path;

use anyhow::Result;
use polars::prelude::*;
use rayon::prelude::*;

use crate::cols;
use crate::data::schema::{Meta, Review, parse_meta, parse_review};
use crate::error::InputError;
use crate::io::open_lines;

/// How to treat bad input while reading.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadOptions {
    /// Skip (and count) malformed lines instead of stopping at the first one.
    pub skip_bad_lines: bool,
    pub quiet: bool,
}

/// A raw file read into a frame, with the counts a stage summary reports.
#[derive(Debug)]
pub struct ReadOutcome {
    pub frame: DataFrame,
    /// Lines in the file (blank ones included).
    pub lines: usize,
    /// Bad lines skipped (only with `skip_bad_lines`).
    pub skipped: usize,
    /// The first few skipped lines' errors, for the summary.
    pub skipped_examples: Vec<String>,
}

const CHUNK_LINES: usize = 32 * 1024;

/// Parses every non-blank line of `path` with `parse`, in parallel, keeping file order.
fn read_jsonl<T: Send>(
    path: &Path,
    opts: ReadOptions,
    parse: fn(&str, &Path, usize) -> Result<T, InputError>,
) -> Result<(Vec<T>, usize, usize, Vec<String>)> {
    let (mut reader, pb) = open_lines(path, opts.quiet)?;
    let mut rows = Vec::new();
    let (mut line_no, mut skipped, mut examples) = (0usize, 0usize, Vec::new());
    let mut chunk: Vec<(usize, String)> = Vec::with_capacity(CHUNK_LINES);
    let mut buf = Vec::new();
    loop {
        chunk.clear();
        while chunk.len() < CHUNK_LINES {
            buf.clear();
            let n = reader
                .read_until(b'\n', &mut buf)
                .map_err(|e| InputError::File {
                    file: path.to_path_buf(),
                    message: format!("read error after line {line_no}: {e}"),
                })?;
            if n == 0 {
                break;
            }
            line_no += 1;
            let line = String::from_utf8(std::mem::take(&mut buf)).map_err(|_| InputError::Json {
                file: path.to_path_buf(),
                line: line_no,
                message: "not valid UTF-8".into(),
            });
            match line {
                Ok(l) if l.trim().is_empty() => {}
                Ok(l) => chunk.push((line_no, l)),
                Err(e) if opts.skip_bad_lines => note_skip(&mut skipped, &mut examples, &e),
                Err(e) => return Err(e.into()),
            }
        }
        if chunk.is_empty() {
            break;
        }
        let parsed: Vec<Result<T, InputError>> = chunk
            .par_iter()
            .map(|(no, l)| parse(l.trim_end(), path, *no))
            .collect();
        for r in parsed {
            match r {
                Ok(v) => rows.push(v),
                Err(e) if opts.skip_bad_lines => note_skip(&mut skipped, &mut examples, &e),
                Err(e) => {
                    pb.finish_and_clear();
                    return Err(e.into());
                }
            }
        }
    }
    pb.finish_and_clear();
    Ok((rows, line_no, skipped, examples))
}

fn note_skip(skipped: &mut usize, examples: &mut Vec<String>, e: &InputError) {
    *skipped += 1;
    if examples.len() < 3 {
        examples.push(e.to_string());
    }
}

/// Reads a raw review file into a frame with one row per review (see [`reviews_frame`]).
pub fn read_reviews(path: &Path, opts: ReadOptions) -> Result<ReadOutcome> {
    let (rows, lines, skipped, skipped_examples) = read_jsonl(path, opts, parse_review)?;
    let frame = anyhow::Context::with_context(reviews_frame(&rows), || {
        format!("building the frame of {}", path.display())
    })?;
    Ok(ReadOutcome {
        frame,
        lines,
        skipped,
        skipped_examples,
    })
}

/// Reads a raw metadata file into a frame with one row per item (see [`meta_frame`]).
pub fn read_meta(path: &Path, opts: ReadOptions) -> Result<ReadOutcome> {
    let (rows, lines, skipped, skipped_examples) = read_jsonl(path, opts, parse_meta)?;
    let frame = anyhow::Context::with_context(meta_frame(&rows), || {
        format!("building the frame of {}", path.display())
    })?;
    Ok(ReadOutcome {
        frame,
        lines,
        skipped,
        skipped_examples,
    })
}

fn str_col<T>(name: &str, rows: &[T], f: impl Fn(&T) -> &str) -> Column {
    Column::new(name.into(), rows.iter().map(f).collect::<Vec<&str>>())
}

/// A `list<str>` column with one list per row.
pub fn list_col<T>(name: &str, rows: &[T], f: impl Fn(&T) -> &[String]) -> Column {
    let lists: ListChunked = rows
        .iter()
        .map(|r| {
            Some(Series::new(
                PlSmallStr::EMPTY,
                f(r).iter().map(String::as_str).collect::<Vec<_>>(),
            ))
        })
        .collect();
    let mut lists = lists.with_name(name.into());
    if rows.is_empty() {
        lists = ListChunked::full_null_with_dtype(name.into(), 0, &DataType::String);
    }
    lists
        .into_series()
        .cast(&DataType::List(Box::new(DataType::String)))
        .expect("list of strings")
        .into()
}

/// Review columns: `review_id, rating, title, text, asin, parent_asin, user_id, timestamp (ms),
/// helpful_vote, verified_purchase, n_images`.
pub fn reviews_frame(rows: &[Review]) -> PolarsResult<DataFrame> {
    DataFrame::new(
        rows.len(),
        vec![
            Column::new(
                cols::REVIEW_ID.into(),
                rows.iter().map(|r| r.review_id).collect::<Vec<u64>>(),
            ),
            Column::new(
                cols::RATING.into(),
                rows.iter().map(|r| r.rating).collect::<Vec<f64>>(),
            ),
            str_col(cols::TITLE, rows, |r| &r.title),
            str_col(cols::TEXT, rows, |r| &r.text),
            str_col(cols::ASIN, rows, |r| &r.asin),
            str_col(cols::PARENT_ASIN, rows, |r| &r.parent_asin),
            str_col(cols::USER_ID, rows, |r| &r.user_id),
            Column::new(
                cols::TIMESTAMP.into(),
                rows.iter().map(|r| r.timestamp).collect::<Vec<i64>>(),
            ),
            Column::new(
                cols::HELPFUL_VOTE.into(),
                rows.iter().map(|r| r.helpful_vote).collect::<Vec<i64>>(),
            ),
            Column::new(
                cols::VERIFIED_PURCHASE.into(),
                rows.iter()
                    .map(|r| r.verified_purchase)
                    .collect::<Vec<bool>>(),
            ),
            Column::new(
                cols::N_IMAGES.into(),
                rows.iter().map(|r| r.n_images).collect::<Vec<u32>>(),
            ),
        ],
    )
}

/// Metadata columns: `parent_asin, main_category, title, average_rating, rating_number,
/// features (list), description (list), price (f64), price_raw, store, categories (list), details (JSON)`.
pub fn meta_frame(rows: &[Meta]) -> PolarsResult<DataFrame> {
    DataFrame::new(
        rows.len(),
        vec![
            str_col(cols::PARENT_ASIN, rows, |m| &m.parent_asin),
            Column::new(
                cols::MAIN_CATEGORY.into(),
                rows.iter()
                    .map(|m| m.main_category.as_deref())
                    .collect::<Vec<Option<&str>>>(),
            ),
            str_col(cols::TITLE, rows, |m| &m.title),
            Column::new(
                cols::AVERAGE_RATING.into(),
                rows.iter().map(|m| m.average_rating).collect::<Vec<_>>(),
            ),
            Column::new(
                cols::RATING_NUMBER.into(),
                rows.iter().map(|m| m.rating_number).collect::<Vec<_>>(),
            ),
            list_col(cols::FEATURES, rows, |m| &m.features),
            list_col(cols::DESCRIPTION, rows, |m| &m.description),
            Column::new(
                cols::PRICE.into(),
                rows.iter().map(|m| m.price).collect::<Vec<_>>(),
            ),
            Column::new(
                cols::PRICE_RAW.into(),
                rows.iter()
                    .map(|m| m.price_raw.as_deref())
                    .collect::<Vec<Option<&str>>>(),
            ),
            Column::new(
                cols::STORE.into(),
                rows.iter()
                    .map(|m| m.store.as_deref())
                    .collect::<Vec<Option<&str>>>(),
            ),
            list_col(cols::CATEGORIES, rows, |m| &m.categories),
            str_col(cols::DETAILS, rows, |m| &m.details),
        ],
    )
}
