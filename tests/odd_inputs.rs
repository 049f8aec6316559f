//! The hostile-input corpus: raw files a user may really have, each a few lines made here, run
//! through the binary (`etl split`, then `etl build-items` where the metadata matters). Every
//! case has one defined outcome — accepted, a counted skip, a warning, or a clear error naming
//! the file, line and field — and none panics. README "Odd inputs" lists the same outcomes.

mod common;

use std::path::Path;
use std::process::Command;

use common::review;
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_recsys");

/// Eight good reviews of four items, a day apart.
fn good_reviews() -> Vec<String> {
    (0..8)
        .map(|i| {
            review(
                &format!("B0{}", i % 4),
                1_600_000_000_000 + i * 86_400_000,
                &format!("a gentle shampoo number {i}"),
            )
        })
        .collect()
}

fn meta_line(asin: &str, title: serde_json::Value) -> String {
    json!({"parent_asin": asin, "title": title, "main_category": "All Beauty",
           "features": ["f"], "description": ["d"], "price": 9.5, "details": {}})
    .to_string()
}

fn good_meta() -> Vec<String> {
    (0..4)
        .map(|i| meta_line(&format!("B0{i}"), json!(format!("Shampoo {i}"))))
        .collect()
}

/// A data root with these raw bytes.
fn root(reviews: &[u8], meta: &[u8]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("raw");
    std::fs::create_dir_all(&raw).unwrap();
    std::fs::write(raw.join("All_Beauty.jsonl"), reviews).unwrap();
    std::fs::write(raw.join("meta_All_Beauty.jsonl"), meta).unwrap();
    dir
}

fn lines(ls: &[String]) -> Vec<u8> {
    (ls.join("\n") + "\n").into_bytes()
}

/// `recsys --data-dir ROOT ARGS…`: (exit code, stdout + stderr). A panic fails the test here.
fn recsys(root: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN)
        .arg("--data-dir")
        .arg(root)
        .args(args)
        .env_remove("RECSYS_DATA_DIR")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let code = out.status.code().unwrap_or(-1);
    assert!(
        code != 101 && code != -1 && !text.contains("panicked"),
        "recsys {}: panic or signal ({code}):\n{text}",
        args.join(" ")
    );
    (code, text)
}

const SPLIT: &[&str] = &["etl", "split", "--quantiles", "0.5,0.75"];

fn split_ok(root: &Path) -> String {
    let (code, text) = recsys(root, SPLIT);
    assert_eq!(code, 0, "{text}");
    text
}

fn split_err(root: &Path, want: &[&str]) {
    let (code, text) = recsys(root, SPLIT);
    assert_eq!(code, 1, "{text}");
    for w in want {
        assert!(text.contains(w), "wanted {w:?} in:\n{text}");
    }
}

/// Every review text of the three split files, in time order.
fn texts(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for s in recsys::Split::ALL {
        let df =
            recsys::io::read_parquet(&root.join(format!("processed/reviews_{s}.parquet"))).unwrap();
        let c = df.column("text").unwrap().str().unwrap();
        out.extend(c.iter().map(|t| t.unwrap_or("").to_string()));
    }
    out
}

struct Tally {
    accepted: usize,
    skipped: usize,
    warned: usize,
    refused: usize,
}

#[test]
fn every_odd_input_has_its_defined_outcome() {
    let meta = lines(&good_meta());
    let mut t = Tally {
        accepted: 0,
        skipped: 0,
        warned: 0,
        refused: 0,
    };
    let with_line = |extra: &str| {
        let mut ls = good_reviews();
        ls.insert(2, extra.to_string());
        ls
    };

    // Invalid UTF-8 on line 3: an error naming file and line; --skip-bad-lines counts it.
    let mut bytes = lines(&good_reviews()[..2]);
    bytes.extend_from_slice(b"{\"text\": \"caf\xe9\"}\n");
    bytes.extend(lines(&good_reviews()[2..]));
    let dir = root(&bytes, &meta);
    split_err(dir.path(), &["All_Beauty.jsonl:3", "not valid UTF-8"]);
    let (code, text) = recsys(dir.path(), &[SPLIT, &["--skip-bad-lines"]].concat());
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("1 bad lines skipped"), "{text}");
    t.refused += 1;
    t.skipped += 1;

    // CRLF line endings and blank lines (also whitespace-only ones): accepted, nothing lost.
    let crlf = good_reviews().join("\r\n") + "\r\n\r\n  \r\n\n";
    let dir = root(crlf.as_bytes(), &meta);
    split_ok(dir.path());
    assert_eq!(texts(dir.path()).len(), 8);
    t.accepted += 1;

    // A JSON array, on one line or pretty-printed: one clear error, not one per line.
    for array in [
        format!("[{}]\n", good_reviews().join(",")),
        format!("[\n  {}\n]\n", good_reviews().join(",\n  ")),
    ] {
        let dir = root(array.as_bytes(), &meta);
        split_err(dir.path(), &["All_Beauty.jsonl:1", "JSON array", "jq -c"]);
        t.refused += 1;
    }

    // Field errors: file, line and field named, the value shown.
    let mut no_asin: serde_json::Value = serde_json::from_str(&good_reviews()[0]).unwrap();
    no_asin.as_object_mut().unwrap().remove("parent_asin");
    let mut ts_string: serde_json::Value = serde_json::from_str(&good_reviews()[0]).unwrap();
    ts_string["timestamp"] = json!("2020-09-13");
    let mut rating17: serde_json::Value = serde_json::from_str(&good_reviews()[0]).unwrap();
    rating17["rating"] = json!(17);
    for (line, field, shown) in [
        (no_asin.to_string(), "parent_asin", "missing or null"),
        (ts_string.to_string(), "timestamp", "\"2020-09-13\""),
        (review("B00", -5, "before 1970"), "timestamp", "-5"),
        (
            review("B00", 32_503_680_000_000, "the year 3000"),
            "timestamp",
            "32503680000000",
        ),
        (rating17.to_string(), "rating", "17"),
    ] {
        let dir = root(&lines(&with_line(&line)), &meta);
        split_err(
            dir.path(),
            &["All_Beauty.jsonl:3", &format!("field `{field}`"), shown],
        );
        t.refused += 1;
    }

    // A null title, emoji / right-to-left / zero-width / escaped NUL text, a 1 MB review:
    // accepted, every character kept; the item table builds over them.
    let mut null_title: serde_json::Value = serde_json::from_str(&good_reviews()[0]).unwrap();
    null_title["title"] = serde_json::Value::Null;
    let odd = "😀 שלום مرحبا zero\u{200b}width nul\u{0}byte";
    let big = "lovely soft hair ".repeat(1_000_000 / 17);
    let mut ls = good_reviews();
    ls[1] = null_title.to_string();
    ls[3] = review("B03", 1_600_000_000_000 + 3 * 86_400_000, odd);
    ls[5] = review("B01", 1_600_000_000_000 + 5 * 86_400_000, &big);
    assert!(
        ls[3].contains("\\u0000"),
        "the NUL is escaped in the JSON line"
    );
    let dir = root(&lines(&ls), &meta);
    split_ok(dir.path());
    let got = texts(dir.path());
    assert!(got.iter().any(|x| x == odd) && got.iter().any(|x| x == &big));
    let (code, text) = recsys(dir.path(), &["etl", "build-items"]);
    assert_eq!(code, 0, "{text}");
    t.accepted += 3;

    // Metadata: duplicate rows with conflicting titles (and a null title): a warning, the first
    // line of each item kept.
    let mut m = good_meta();
    m.push(meta_line("B01", json!("Conditioner 1")));
    m.push(meta_line("B02", json!("Shampoo 2")));
    m[3] = meta_line("B03", serde_json::Value::Null);
    let dir = root(&lines(&good_reviews()), &lines(&m));
    split_ok(dir.path());
    let (code, text) = recsys(dir.path(), &["etl", "build-items"]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("2 lines repeat an item")
            && text.contains("1 items have different titles")
            && text.contains("B01: \"Shampoo 1\" vs \"Conditioner 1\""),
        "{text}"
    );
    let items = recsys::io::read_parquet(&dir.path().join("processed/items.parquet")).unwrap();
    assert_eq!(items.height(), 4);
    t.warned += 1;
    t.accepted += 1;

    // An empty metadata file: an error, no items.parquet.
    let dir = root(&lines(&good_reviews()), b"");
    split_ok(dir.path());
    let (code, text) = recsys(dir.path(), &["etl", "build-items"]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("meta_All_Beauty.jsonl: no items (0 lines)"),
        "{text}"
    );
    assert!(!dir.path().join("processed/items.parquet").exists());
    t.refused += 1;

    // raw/X.jsonl and raw/X.jsonl.gz both present: an error naming both.
    let dir = root(&lines(&good_reviews()), &meta);
    std::fs::write(dir.path().join("raw/All_Beauty.jsonl.gz"), b"").unwrap();
    split_err(
        dir.path(),
        &[
            "All_Beauty.jsonl: both this and",
            "All_Beauty.jsonl.gz exist",
        ],
    );
    t.refused += 1;

    println!(
        "odd inputs: {} outcomes checked: {} accepted, {} counted skip, {} warning, {} clear error",
        t.accepted + t.skipped + t.warned + t.refused,
        t.accepted,
        t.skipped,
        t.warned,
        t.refused
    );
}
