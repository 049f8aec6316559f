//! The Amazon Reviews 2023 raw schema and its validation, one JSON line at a time.
//!
//! Real files are messy: `price` is a number, a string or null; `details` is an object of
//! varying keys (kept as a JSON string); `description` / `features` may be empty lists.

use std::path::Path;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::InputError;

/// One review line. `review_id` is the 1-based line number in the raw file.
#[derive(Debug, Clone, PartialEq)]
pub struct Review {
    pub review_id: u64,
    pub rating: f64,
    pub title: String,
    pub text: String,
    pub asin: String,
    pub parent_asin: String,
    pub user_id: String,
    /// Milliseconds since the epoch.
    pub timestamp: i64,
    pub helpful_vote: i64,
    pub verified_purchase: bool,
    pub n_images: u32,
}

/// One metadata line (an item, keyed by `parent_asin`).
#[derive(Debug, Clone, PartialEq)]
pub struct Meta {
    pub parent_asin: String,
    pub main_category: Option<String>,
    pub title: String,
    pub average_rating: Option<f64>,
    pub rating_number: Option<i64>,
    pub features: Vec<String>,
    pub description: Vec<String>,
    /// Parsed price; `None` when absent or unparseable (see `price_raw`).
    pub price: Option<f64>,
    /// The price as written in the file (number or string), for inspection.
    pub price_raw: Option<String>,
    pub store: Option<String>,
    pub categories: Vec<String>,
    /// The `details` object as a JSON string (its keys vary by item).
    pub details: String,
}

/// Fast path: the common, well-typed review line.
#[derive(Deserialize)]
struct RawReview {
    rating: Option<f64>,
    title: Option<String>,
    text: Option<String>,
    #[serde(default)]
    images: Option<Vec<serde::de::IgnoredAny>>,
    asin: Option<String>,
    parent_asin: Option<String>,
    user_id: Option<String>,
    timestamp: Option<i64>,
    helpful_vote: Option<i64>,
    verified_purchase: Option<bool>,
}

struct LineCtx<'a> {
    file: &'a Path,
    line: usize,
}

impl LineCtx<'_> {
    fn field(&self, field: &str, expected: &str, found: &str) -> InputError {
        InputError::Field {
            file: self.file.to_path_buf(),
            line: self.line,
            field: field.to_string(),
            expected: expected.to_string(),
            found: found.to_string(),
        }
    }
    fn missing(&self, field: &str, expected: &str) -> InputError {
        self.field(field, expected, "nothing (missing or null)")
    }
}

/// Parses and validates one review line.
pub fn parse_review(line: &str, file: &Path, line_no: usize) -> Result<Review, InputError> {
    let cx = LineCtx {
        file,
        line: line_no,
    };
    let raw: RawReview = match serde_json::from_str(line) {
        Ok(r) => r,
        // Slow path: find which field is wrong, to name it.
        Err(e) => return Err(diagnose_review(line, &cx, e)),
    };
    let rating = raw
        .rating
        .ok_or_else(|| cx.missing("rating", "a number 0..5"))?;
    if !(0.0..=5.0).contains(&rating) {
        return Err(cx.field("rating", "a number 0..5", &rating.to_string()));
    }
    let parent_asin = raw
        .parent_asin
        .ok_or_else(|| cx.missing("parent_asin", "a string"))?;
    if parent_asin.is_empty() {
        return Err(cx.field("parent_asin", "a non-empty string", "\"\""));
    }
    let timestamp = raw
        .timestamp
        .ok_or_else(|| cx.missing("timestamp", "milliseconds since 1970"))?;
    if timestamp <= 0 || timestamp > latest_timestamp() {
        return Err(cx.field(
            "timestamp",
            "milliseconds since 1970, not in the future",
            &timestamp.to_string(),
        ));
    }
    Ok(Review {
        review_id: line_no as u64,
        rating,
        title: raw.title.unwrap_or_default(),
        text: raw.text.ok_or_else(|| cx.missing("text", "a string"))?,
        asin: raw.asin.ok_or_else(|| cx.missing("asin", "a string"))?,
        parent_asin,
        user_id: raw
            .user_id
            .ok_or_else(|| cx.missing("user_id", "a string"))?,
        timestamp,
        helpful_vote: raw.helpful_vote.unwrap_or(0),
        verified_purchase: raw.verified_purchase.unwrap_or(false),
        n_images: raw.images.map_or(0, |v| v.len() as u32),
    })
}

/// The latest review time accepted: now plus a day (clocks and time zones differ); later is a
/// typo or a unit error, and would put the review after every time split.
/// Read once per process: the check runs on every review line.
fn latest_timestamp() -> i64 {
    static LATEST: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *LATEST.get_or_init(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        now + 86_400_000
    })
}

const REVIEW_TYPES: &[(&str, &str)] = &[
    ("rating", "a number 0..5"),
    ("title", "a string"),
    ("text", "a string"),
    ("images", "a list"),
    ("asin", "a string"),
    ("parent_asin", "a string"),
    ("user_id", "a string"),
    ("timestamp", "an integer (milliseconds since 1970)"),
    ("helpful_vote", "an integer"),
    ("verified_purchase", "true or false"),
];

fn diagnose_review(line: &str, cx: &LineCtx, err: serde_json::Error) -> InputError {
    let obj = match object(line, cx) {
        Ok(o) => o,
        Err(e) => return e,
    };
    for (field, expected) in REVIEW_TYPES {
        let Some(v) = obj.get(*field) else { continue };
        let ok = match *field {
            "rating" => v.is_number() || v.is_null(),
            "timestamp" | "helpful_vote" => v.is_i64() || v.is_null(),
            "verified_purchase" => v.is_boolean() || v.is_null(),
            "images" => v.is_array() || v.is_null(),
            _ => v.is_string() || v.is_null(),
        };
        if !ok {
            return cx.field(field, expected, &describe(v));
        }
    }
    InputError::Json {
        file: cx.file.to_path_buf(),
        line: cx.line,
        message: err.to_string(),
    }
}

fn object(line: &str, cx: &LineCtx) -> Result<Map<String, Value>, InputError> {
    match serde_json::from_str::<Value>(line) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(other) => Err(InputError::Json {
            file: cx.file.to_path_buf(),
            line: cx.line,
            message: format!("expected a JSON object, found {}", describe(&other)),
        }),
        Err(e) => Err(InputError::Json {
            file: cx.file.to_path_buf(),
            line: cx.line,
            message: e.to_string(),
        }),
    }
}

/// A short description of a JSON value for error messages.
fn describe(v: &Value) -> String {
    let s = match v {
        Value::Null => return "null".into(),
        Value::Bool(b) => return format!("boolean {b}"),
        Value::Number(n) => return format!("number {n}"),
        Value::String(s) => format!("string {s:?}"),
        Value::Array(_) => return "a list".into(),
        Value::Object(_) => return "an object".into(),
    };
    if s.len() > 60 {
        format!(
            "{}…",
            &s[..s.char_indices().nth(57).map_or(s.len(), |(i, _)| i)]
        )
    } else {
        s
    }
}

/// Parses and validates one metadata line.
pub fn parse_meta(line: &str, file: &Path, line_no: usize) -> Result<Meta, InputError> {
    let cx = LineCtx {
        file,
        line: line_no,
    };
    let obj = object(line, &cx)?;
    let parent_asin = match obj.get("parent_asin") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::String(_)) => {
            return Err(cx.field("parent_asin", "a non-empty string", "\"\""));
        }
        Some(Value::Null) | None => return Err(cx.missing("parent_asin", "a string")),
        Some(v) => return Err(cx.field("parent_asin", "a string", &describe(v))),
    };
    let (price, price_raw) = match obj.get("price") {
        None | Some(Value::Null) => (None, None),
        Some(Value::Number(n)) => (n.as_f64(), Some(n.to_string())),
        Some(Value::String(s)) => (parse_price(s), Some(s.clone())),
        Some(v) => return Err(cx.field("price", "a number, a string or null", &describe(v))),
    };
    let details = match obj.get("details") {
        None | Some(Value::Null) => "{}".to_string(),
        Some(v @ Value::Object(_)) => v.to_string(),
        Some(v) => return Err(cx.field("details", "an object", &describe(v))),
    };
    Ok(Meta {
        parent_asin,
        main_category: opt_string(&obj, "main_category", &cx)?,
        title: opt_string(&obj, "title", &cx)?.unwrap_or_default(),
        average_rating: opt_f64(&obj, "average_rating", &cx)?,
        rating_number: opt_f64(&obj, "rating_number", &cx)?.map(|x| x as i64),
        features: string_list(&obj, "features", &cx)?,
        description: string_list(&obj, "description", &cx)?,
        price,
        price_raw,
        store: opt_string(&obj, "store", &cx)?,
        categories: string_list(&obj, "categories", &cx)?,
        details,
    })
}

/// `"$1,299.00"` → 1299.0; ranges and words (`"10 - 20"`, `"None"`) are unparseable → None.
pub fn parse_price(s: &str) -> Option<f64> {
    let t = s.trim().trim_start_matches('$').replace(',', "");
    t.parse::<f64>().ok().filter(|x| x.is_finite() && *x >= 0.0)
}

fn opt_string(o: &Map<String, Value>, f: &str, cx: &LineCtx) -> Result<Option<String>, InputError> {
    match o.get(f) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(v) => Err(cx.field(f, "a string or null", &describe(v))),
    }
}

fn opt_f64(o: &Map<String, Value>, f: &str, cx: &LineCtx) -> Result<Option<f64>, InputError> {
    match o.get(f) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(v) => Err(cx.field(f, "a number or null", &describe(v))),
    }
}

/// A list of strings; null or missing is an empty list, a lone string a one-element list.
fn string_list(o: &Map<String, Value>, f: &str, cx: &LineCtx) -> Result<Vec<String>, InputError> {
    match o.get(f) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                other => Err(cx.field(
                    f,
                    "a list of strings",
                    &format!("an element {}", describe(other)),
                )),
            })
            .collect(),
        Some(v) => Err(cx.field(f, "a list of strings", &describe(v))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(line: &str) -> Result<Review, InputError> {
        parse_review(line, Path::new("x.jsonl"), 7)
    }

    #[test]
    fn price_strings_parse_or_become_null() {
        assert_eq!(parse_price("$1,299.00"), Some(1299.0));
        assert_eq!(parse_price(" 12.5 "), Some(12.5));
        assert_eq!(parse_price("None"), None);
        assert_eq!(parse_price("10 - 20"), None);
    }

    #[test]
    fn wrong_type_names_the_field_and_line() {
        let e = p(r#"{"rating":5,"title":"t","text":"x","asin":"A","parent_asin":"A","user_id":"U","timestamp":"soon","helpful_vote":0,"verified_purchase":true}"#).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("x.jsonl:7") && msg.contains("`timestamp`") && msg.contains("\"soon\""),
            "{msg}"
        );
    }
}
