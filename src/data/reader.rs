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
            // A UTF-8 byte-order mark (Windows editors write one) is not part of the JSON.
            let line = line.map(|l| match (line_no, l.strip_prefix('\u{feff}')) {
                (1, Some(rest)) => rest.to_string(),
                _ => l,
            });
            // A JSON array (one document) is not JSON Lines: say so once, not per line.
            if let Ok(l) = &line
                && rows.is_empty()
                && chunk.is_empty()
                && l.trim_start().starts_with('[')
            {
                pb.finish_and_clear();
                return Err(InputError::Json {
                    file: path.to_path_buf(),
                    line: line_no,
                    message: "this is a JSON array; recsys reads JSON Lines (one object per \
                              line): convert it with `jq -c '.[]' FILE > FILE.jsonl`"
                        .into(),
                }
                .into());
            }
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
    read_frame(path, opts, parse_review, reviews_frame)
}

/// Reads a raw metadata file into a frame with one row per item (see [`meta_frame`]).
pub fn read_meta(path: &Path, opts: ReadOptions) -> Result<ReadOutcome> {
    read_frame(path, opts, parse_meta, meta_frame)
}

/// Parses every line of `path` with `parse`, then builds the frame of the rows.
fn read_frame<T: Send>(
    path: &Path,
    opts: ReadOptions,
    parse: fn(&str, &Path, usize) -> Result<T, InputError>,
    frame: fn(&[T]) -> PolarsResult<DataFrame>,
) -> Result<ReadOutcome> {
    let (rows, lines, skipped, skipped_examples) = read_jsonl(path, opts, parse)?;
    let frame = anyhow::Context::with_context(frame(&rows), || {
        format!("building the frame of {}", path.display())
    })?;
    Ok(ReadOutcome {
        frame,
        lines,
        skipped,
        skipped_examples,
    })
}

/// A column with one value per row.
fn col_of<'a, T, V>(name: &str, rows: &'a [T], f: impl Fn(&'a T) -> V) -> Column
where
    Series: NamedFrom<Vec<V>, [V]>,
{
    Column::new(name.into(), rows.iter().map(f).collect::<Vec<V>>())
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
            col_of(cols::REVIEW_ID, rows, |r| r.review_id),
            col_of(cols::RATING, rows, |r| r.rating),
            col_of(cols::TITLE, rows, |r| r.title.as_str()),
            col_of(cols::TEXT, rows, |r| r.text.as_str()),
            col_of(cols::ASIN, rows, |r| r.asin.as_str()),
            col_of(cols::PARENT_ASIN, rows, |r| r.parent_asin.as_str()),
            col_of(cols::USER_ID, rows, |r| r.user_id.as_str()),
            col_of(cols::TIMESTAMP, rows, |r| r.timestamp),
            col_of(cols::HELPFUL_VOTE, rows, |r| r.helpful_vote),
            col_of(cols::VERIFIED_PURCHASE, rows, |r| r.verified_purchase),
            col_of(cols::N_IMAGES, rows, |r| r.n_images),
        ],
    )
}

/// Metadata columns: `parent_asin, main_category, title, average_rating, rating_number,
/// features (list), description (list), price (f64), price_raw, store, categories (list), details (JSON)`.
pub fn meta_frame(rows: &[Meta]) -> PolarsResult<DataFrame> {
    DataFrame::new(
        rows.len(),
        vec![
            col_of(cols::PARENT_ASIN, rows, |m| m.parent_asin.as_str()),
            col_of(cols::MAIN_CATEGORY, rows, |m| m.main_category.as_deref()),
            col_of(cols::TITLE, rows, |m| m.title.as_str()),
            col_of(cols::AVERAGE_RATING, rows, |m| m.average_rating),
            col_of(cols::RATING_NUMBER, rows, |m| m.rating_number),
            list_col(cols::FEATURES, rows, |m| &m.features),
            list_col(cols::DESCRIPTION, rows, |m| &m.description),
            col_of(cols::PRICE, rows, |m| m.price),
            col_of(cols::PRICE_RAW, rows, |m| m.price_raw.as_deref()),
            col_of(cols::STORE, rows, |m| m.store.as_deref()),
            list_col(cols::CATEGORIES, rows, |m| &m.categories),
            col_of(cols::DETAILS, rows, |m| m.details.as_str()),
        ],
    )
}
