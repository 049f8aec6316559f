//! The synthetic generator's ground truth: what each review's text mentions.

use serde::{Deserialize, Serialize};

/// Ground truth of one review: which item attributes and which context phrases its text holds.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Truth {
    /// 1-based line of the review in the reviews file (= its `review_id`).
    pub review_id: u64,
    pub parent_asin: String,
    /// (attribute, value) pairs, the value as written in the text (lower case).
    pub attributes: Vec<(String, String)>,
    /// (who|when|why, phrase) pairs as written in the text.
    pub context: Vec<(String, String)>,
}
