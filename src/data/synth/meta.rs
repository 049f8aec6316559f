//! Metadata lines of the synthetic generator: messy on purpose, like the real files (price as a
//! number, a string or null; empty lists; `details` with varying keys).

use rand::prelude::*;
use serde_json::{Value, json};

use super::{Item, pick, rng_for, title_case};
use crate::data::vocab::*;

/// One metadata line; `stats` = (sum of ratings, number of reviews) generated for the item.
pub(super) fn meta_line(item: &Item, stats: (u64, u64), seed: u64, index: usize) -> String {
    let mut r = rng_for(seed, 5, index as u64);
    let (ptype, _) = PRODUCT_TYPES[item.ptype];
    let mut title = format!("{} ", item.brand);
    if let Some(g) = item.ingredient {
        title += &format!("{} ", title_case(INGREDIENTS[g]));
    }
    title += &title_case(ptype);
    if let Some(t) = item.target {
        title += &format!(" for {}", title_case(t));
    }
    if let Some(s) = item.scent {
        title += &format!(", {} Scent", title_case(SCENTS[s]));
    }
    if let Some(z) = item.size {
        title += &format!(", {}", SIZES[z]);
    }
    let mut features = Vec::new();
    if r.random_bool(0.75) {
        if let Some(g) = item.ingredient {
            features.push(format!(
                "Enriched with {} for visible results",
                INGREDIENTS[g]
            ));
        }
        if let Some(t) = item.target {
            features.push(format!("Formulated for {t}"));
        }
        if let Some(s) = item.scent {
            features.push(format!("Delicate {} fragrance", SCENTS[s]));
        }
        features.push(
            pick(
                &mut r,
                &[
                    "Paraben-free and cruelty-free",
                    "Dermatologist tested",
                    "Made in USA",
                    "Vegan formula",
                ],
            )
            .to_string(),
        );
    }
    let description: Vec<String> = if r.random_bool(0.35) {
        Vec::new()
    } else {
        let base = format!(
            "{} {} brings salon quality care home. {}",
            item.brand,
            ptype,
            item.audience
                .map(|a| format!("Designed for {}.", AUDIENCES[a]))
                .unwrap_or_default()
        );
        if r.random_bool(0.3) {
            // Long descriptions: the ones `etl summaries` shortens.
            let extra = "Our gentle formula is crafted with carefully selected ingredients, tested for safety and \
                         performance, and packaged in recyclable materials. Apply a small amount, massage gently and \
                         rinse if needed. For external use only. Avoid contact with eyes. ";
            vec![base, extra.repeat(r.random_range(2..5))]
        } else {
            vec![base]
        }
    };
    let price = match r.random_range(0..100) {
        0..55 => json!((r.random_range(3.0..60.0f64) * 100.0).round() / 100.0),
        55..65 => json!(format!("${:.2}", r.random_range(3.0..60.0f64))),
        65..68 => json!("None"),
        _ => Value::Null,
    };
    let mut details = serde_json::Map::new();
    let date = chrono::DateTime::from_timestamp_millis(item.launch)
        .map(|d| d.format("%B %-d, %Y").to_string());
    let candidates: Vec<(&str, Option<String>)> = vec![
        ("Brand", Some(item.brand.clone())),
        ("Item Form", Some(pick(&mut r, FORMS).to_string())),
        ("Scent", item.scent.map(|s| title_case(SCENTS[s]))),
        (
            if PRODUCT_TYPES[item.ptype].1 == Family::Hair {
                "Hair Type"
            } else {
                "Skin Type"
            },
            item.target.map(title_case),
        ),
        (
            "Age Range (Description)",
            item.audience
                .map(|a| if a == 2 || a == 5 { "Kid" } else { "Adult" }.to_string()),
        ),
        ("Item Volume", item.size.map(|z| SIZES[z].to_string())),
        ("Manufacturer", Some(item.brand.clone())),
        ("Date First Available", date),
        (
            "Is Discontinued By Manufacturer",
            r.random_bool(0.05).then(|| "No".to_string()),
        ),
    ];
    for (k, v) in candidates {
        if let Some(v) = v.filter(|_| r.random_bool(0.7)) {
            details.insert(k.to_string(), Value::String(v));
        }
    }
    let (sum, count) = stats;
    let (avg, number) = if count > 0 {
        let extra = r.random_range(0..=count * 2);
        (
            (sum as f64 / count as f64 * 10.0).round() / 10.0,
            count + extra,
        )
    } else if r.random_bool(0.7) {
        (
            ((4.1 + 0.7 * item.quality).clamp(1.0, 5.0) * 10.0).round() / 10.0,
            r.random_range(1..20),
        )
    } else {
        (0.0, 0)
    };
    let main_category = match r.random_range(0..20) {
        0 => Value::Null,
        1 => json!("Premium Beauty"),
        _ => json!("All Beauty"),
    };
    let categories: Vec<String> = if r.random_bool(0.1) {
        vec![
            "Beauty & Personal Care".into(),
            format!("{:?} Care", PRODUCT_TYPES[item.ptype].1),
            title_case(ptype),
        ]
    } else {
        Vec::new()
    };
    json!({
        "main_category": main_category,
        "title": title,
        "average_rating": if number > 0 { json!(avg) } else { Value::Null },
        "rating_number": if number > 0 { json!(number) } else { Value::Null },
        "features": features,
        "description": description,
        "price": price,
        "images": [],
        "videos": [],
        "store": if r.random_bool(0.85) { json!(item.brand) } else { Value::Null },
        "categories": categories,
        "details": Value::Object(details),
        "parent_asin": item.parent_asin,
        "bought_together": Value::Null,
    })
    .to_string()
}
