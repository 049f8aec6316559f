//! Readers on real-shaped lines, gzip, and every bad-input case.

mod common;

use std::io::Write;
use std::path::Path;

use common::*;
use recsys::InputError;
use recsys::data::{ReadOptions, read_meta, read_reviews};

fn opts() -> ReadOptions {
    ReadOptions {
        skip_bad_lines: false,
        quiet: true,
    }
}

fn input_error(e: anyhow::Error) -> InputError {
    e.downcast::<InputError>().expect("a typed input error")
}

#[test]
fn real_review_lines_parse_with_line_numbers_as_review_ids() {
    let out = read_reviews(&fixture("all_beauty_2018_head.jsonl"), opts()).unwrap();
    let df = out.frame;
    assert_eq!(df.height(), 16);
    assert_eq!(out.lines, 16);
    let ids: Vec<u64> = df
        .column("review_id")
        .unwrap()
        .u64()
        .unwrap()
        .into_no_null_iter()
        .collect();
    assert_eq!(ids, (1..=16).collect::<Vec<u64>>());
    assert_eq!(
        df.column("parent_asin").unwrap().str().unwrap().get(0),
        Some("B0000530HU")
    );
    assert_eq!(
        df.column("title").unwrap().str().unwrap().get(0),
        Some("Five Stars")
    );
    assert_eq!(
        df.column("rating").unwrap().f64().unwrap().get(2),
        Some(1.0)
    );
    assert_eq!(
        df.column("timestamp").unwrap().i64().unwrap().get(0),
        Some(1472688000000)
    );
    assert_eq!(
        df.column("verified_purchase")
            .unwrap()
            .bool()
            .unwrap()
            .get(0),
        Some(true)
    );
}

#[test]
fn gzip_file_reads_the_same_as_plain() {
    let dir = tempfile::tempdir().unwrap();
    let gz = dir.path().join("All_Beauty.jsonl.gz");
    let mut enc = flate2::write::GzEncoder::new(
        std::fs::File::create(&gz).unwrap(),
        flate2::Compression::default(),
    );
    enc.write_all(&std::fs::read(fixture("all_beauty_2018_head.jsonl")).unwrap())
        .unwrap();
    enc.finish().unwrap();
    let plain = read_reviews(&fixture("all_beauty_2018_head.jsonl"), opts())
        .unwrap()
        .frame;
    let zipped = read_reviews(&gz, opts()).unwrap().frame;
    assert!(plain.equals(&zipped));
}

#[test]
fn all_shared_real_reviews_parse() {
    let Some(path) = shared_reviews("readers::all_shared_real_reviews_parse") else {
        return;
    };
    let out = read_reviews(&path, opts()).unwrap();
    assert_eq!(out.frame.height(), 5_269);
    assert_eq!(out.skipped, 0);
}

#[test]
fn messy_metadata_is_normalised() {
    let df = read_meta(&fixture("meta_messy.jsonl"), opts())
        .unwrap()
        .frame;
    assert_eq!(df.height(), 4);
    let price: Vec<Option<f64>> = df.column("price").unwrap().f64().unwrap().iter().collect();
    assert_eq!(price, vec![None, Some(8.99), Some(12.5), None]);
    let raw: Vec<Option<&str>> = df
        .column("price_raw")
        .unwrap()
        .str()
        .unwrap()
        .iter()
        .collect();
    assert_eq!(raw, vec![None, Some("8.99"), Some("$12.50"), Some("None")]);
    let features = df.column("features").unwrap().list().unwrap();
    assert_eq!(features.get_as_series(0).unwrap().len(), 0);
    assert_eq!(features.get_as_series(1).unwrap().len(), 2);
    // a lone string becomes a one-element list
    assert_eq!(
        features.get_as_series(3).unwrap().str().unwrap().get(0),
        Some("One strong colour")
    );
    let details = df.column("details").unwrap().str().unwrap();
    let nested: serde_json::Value = serde_json::from_str(details.get(3).unwrap()).unwrap();
    assert_eq!(nested["Size"]["Width"], "2 in");
    assert_eq!(
        df.column("main_category").unwrap().str().unwrap().get(2),
        None
    );
    assert_eq!(df.column("store").unwrap().str().unwrap().get(2), None);
}

fn write_lines(dir: &Path, lines: &[&str]) -> std::path::PathBuf {
    let p = dir.join("bad.jsonl");
    std::fs::write(&p, lines.join("\n")).unwrap();
    p
}

fn assert_field(e: &InputError, want: &str) {
    assert!(
        matches!(e, InputError::Field { field, .. } if field == want),
        "{e}"
    );
}

fn bad_case(bad: &str) -> InputError {
    let dir = tempfile::tempdir().unwrap();
    let good = review("B01", 1_600_000_000_000, "fine");
    let p = write_lines(dir.path(), &[&good, &good, bad, &good]);
    let e = input_error(read_reviews(&p, opts()).unwrap_err());
    assert_eq!(e.line(), 3, "{e}");
    assert!(e.to_string().contains("bad.jsonl:3"), "{e}");
    e
}

#[test]
fn malformed_json_names_file_and_line() {
    let e = bad_case(r#"{"rating": 5.0, "title": "#);
    assert!(matches!(e, InputError::Json { .. }), "{e}");
}

#[test]
fn non_object_line_is_rejected() {
    let e = bad_case("[1, 2, 3]");
    assert!(e.to_string().contains("expected a JSON object"), "{e}");
}

#[test]
fn missing_required_field_names_it() {
    let line = review("B01", 1_600_000_000_000, "x")
        .replace(r#""user_id":"AGKHLEW2SOWHNMFQIJGBECAF7INQ","#, "");
    let e = bad_case(&line);
    assert_field(&e, "user_id");
}

#[test]
fn null_required_field_is_missing() {
    let line = review("B01", 1_600_000_000_000, "x").replace(r#""rating":5.0"#, r#""rating":null"#);
    let e = bad_case(&line);
    assert_field(&e, "rating");
}

#[test]
fn wrong_type_names_field_and_found_value() {
    let line =
        review("B01", 1_600_000_000_000, "x").replace(r#""rating":5.0"#, r#""rating":"five""#);
    let e = bad_case(&line);
    let msg = e.to_string();
    assert_field(&e, "rating");
    assert!(msg.contains("\"five\""), "{msg}");
}

#[test]
fn out_of_range_rating_is_rejected() {
    let line = review("B01", 1_600_000_000_000, "x").replace(r#""rating":5.0"#, r#""rating":7"#);
    let e = bad_case(&line);
    assert_field(&e, "rating");
}

#[test]
fn invalid_utf8_names_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.jsonl");
    let good = review("B01", 1_600_000_000_000, "fine");
    let mut bytes = format!("{good}\n").into_bytes();
    bytes.extend_from_slice(b"{\"text\": \"\xff\xfe\"}\n");
    std::fs::write(&p, bytes).unwrap();
    let e = input_error(read_reviews(&p, opts()).unwrap_err());
    assert_eq!(e.line(), 2);
    assert!(e.to_string().contains("UTF-8"));
}

#[test]
fn meta_wrong_type_names_field() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("meta.jsonl");
    std::fs::write(&p, "{\"parent_asin\": \"B1\", \"price\": [1]}\n").unwrap();
    let e = input_error(read_meta(&p, opts()).unwrap_err());
    assert!(
        matches!(&e, InputError::Field { field, line: 1, .. } if field == "price"),
        "{e}"
    );
}

#[test]
fn skip_bad_lines_counts_and_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let good = review("B01", 1_600_000_000_000, "fine");
    let p = write_lines(
        dir.path(),
        &[&good, "not json", &good, "", r#"{"rating": 5}"#, &good],
    );
    let out = read_reviews(
        &p,
        ReadOptions {
            skip_bad_lines: true,
            quiet: true,
        },
    )
    .unwrap();
    assert_eq!(out.frame.height(), 3);
    assert_eq!(out.skipped, 2);
    assert_eq!(out.lines, 6);
    let ids: Vec<u64> = out
        .frame
        .column("review_id")
        .unwrap()
        .u64()
        .unwrap()
        .into_no_null_iter()
        .collect();
    assert_eq!(ids, vec![1, 3, 6]);
    assert!(out.skipped_examples[0].contains("bad.jsonl:2"));
}
