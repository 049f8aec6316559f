//! Review lines of the synthetic generator: an item drawn by popularity at the review's time,
//! a rating around the item's quality, and text that mentions attributes and context (recorded
//! as ground truth).

use rand::prelude::*;
use serde_json::json;

use super::*;

fn fill(template: &str, v: &str) -> String {
    template.replace("{v}", v)
}

pub(super) fn gen_review(
    i: usize,
    seed: u64,
    items: &[Item],
    sampler: &ItemSampler,
    n_users: u64,
) -> GenReview {
    let mut r = rng_for(seed, 4, i as u64);
    let t = REVIEWS_START + (growth(r.random(), 1.0) * (REVIEWS_END - REVIEWS_START) as f64) as i64;
    let idx = sampler.sample(t, &mut r);
    let item = &items[idx];
    let mean = 4.1 + 0.7 * item.quality;
    let noise: f64 = (0..3).map(|_| r.random_range(-1.0..1.0)).sum::<f64>() * 0.9;
    let rating = (mean + noise).round().clamp(1.0, 5.0) as u8;
    let positive = rating >= 4;

    let mut attributes: Vec<(&str, String)> = Vec::new();
    let mut candidates: Vec<(&str, String)> =
        vec![("product_type", PRODUCT_TYPES[item.ptype].0.to_string())];
    if let Some(s) = item.scent {
        candidates.push(("scent", SCENTS[s].to_string()));
    }
    if let Some(t) = item.target {
        candidates.push(("target", t.to_string()));
    }
    if let Some(g) = item.ingredient {
        candidates.push(("ingredient", INGREDIENTS[g].to_string()));
    }
    if r.random_bool(0.15) {
        candidates.push(("brand", item.brand.clone()));
    }
    candidates.shuffle(&mut r);
    let n_attr = r.random_range(0..=3.min(candidates.len()));
    let mut sentences: Vec<String> = Vec::new();
    for (attr, value) in candidates.into_iter().take(n_attr) {
        let (pos, neg) = match attr {
            "scent" => (SCENT_POS, SCENT_NEG),
            "target" => (TARGET_POS, TARGET_NEG),
            "ingredient" => (INGREDIENT_POS, INGREDIENT_NEG),
            "brand" => (BRAND_POS, BRAND_NEG),
            _ => (TYPE_POS, TYPE_NEG),
        };
        sentences.push(fill(pick(&mut r, if positive { pos } else { neg }), &value));
        attributes.push((attr, value.to_lowercase()));
    }
    let mut context: Vec<(&str, String)> = Vec::new();
    for (kind, values, templates, p) in [
        ("who", WHO, WHO_TEMPLATES, 0.25),
        ("when", WHEN, WHEN_TEMPLATES, 0.2),
        ("why", WHY, WHY_TEMPLATES, 0.2),
    ] {
        if r.random_bool(p) {
            let v = pick(&mut r, values);
            sentences.push(fill(pick(&mut r, templates), v));
            context.push((kind, v.to_string()));
        }
    }
    sentences.shuffle(&mut r);
    let verdict = match rating {
        4..=5 => pick(&mut r, SENTIMENT_POS),
        3 => pick(&mut r, SENTIMENT_MID),
        _ => pick(&mut r, SENTIMENT_NEG),
    };
    sentences.push(verdict.to_string());
    if r.random_bool(0.4) {
        sentences.insert(0, pick(&mut r, FILLER).to_string());
    }
    let empty = r.random_bool(0.02);
    let text = if empty {
        attributes.clear();
        context.clear();
        String::new()
    } else {
        sentences.join(" ")
    };
    let title = match rating {
        4..=5 => pick(&mut r, TITLES_POS),
        3 => pick(&mut r, TITLES_MID),
        _ => pick(&mut r, TITLES_NEG),
    };
    // Users: 30% of reviews come from a small, active pool.
    let u = if r.random_bool(0.3) {
        r.random_range(0..(n_users / 20).max(1))
    } else {
        r.random_range(0..n_users)
    };
    let asin = if item.variants.is_empty() {
        item.parent_asin.as_str()
    } else {
        item.variants[r.random_range(0..item.variants.len())].as_str()
    };
    let images = if r.random_bool(0.05) {
        vec![
            json!({"small_image_url": "https://example.invalid/s.jpg", "medium_image_url": "https://example.invalid/m.jpg", "large_image_url": "https://example.invalid/l.jpg", "attachment_type": "IMAGE"}),
        ]
    } else {
        Vec::new()
    };
    let helpful_vote = if r.random_bool(0.75) {
        0
    } else {
        (1.0 / r.random::<f64>().max(0.01)) as i64 - 1
    };
    let uid = user_id(u, seed);
    let line = serde_json::to_string(&ReviewLine {
        rating: rating as f64,
        title,
        text: &text,
        images,
        asin,
        parent_asin: &item.parent_asin,
        user_id: &uid,
        timestamp: t,
        helpful_vote,
        verified_purchase: r.random_bool(0.9),
    })
    .expect("serialisable");
    let truth = serde_json::to_string(&Truth {
        review_id: i as u64 + 1,
        parent_asin: item.parent_asin.clone(),
        attributes: attributes
            .into_iter()
            .map(|(a, v)| (a.to_string(), v))
            .collect(),
        context: context
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    })
    .expect("serialisable");
    GenReview {
        line,
        truth,
        item: idx,
        rating,
        empty,
    }
}
