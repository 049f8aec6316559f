//! Column names of every Parquet output, defined once.

pub const REVIEW_ID: &str = "review_id";
pub const RATING: &str = "rating";
pub const TITLE: &str = "title";
pub const TEXT: &str = "text";
pub const ASIN: &str = "asin";
pub const PARENT_ASIN: &str = "parent_asin";
pub const USER_ID: &str = "user_id";
pub const TIMESTAMP: &str = "timestamp";
pub const HELPFUL_VOTE: &str = "helpful_vote";
pub const VERIFIED_PURCHASE: &str = "verified_purchase";
pub const N_IMAGES: &str = "n_images";

pub const MAIN_CATEGORY: &str = "main_category";
pub const AVERAGE_RATING: &str = "average_rating";
pub const RATING_NUMBER: &str = "rating_number";
pub const FEATURES: &str = "features";
pub const DESCRIPTION: &str = "description";
pub const PRICE: &str = "price";
pub const PRICE_RAW: &str = "price_raw";
pub const STORE: &str = "store";
pub const CATEGORIES: &str = "categories";
pub const DETAILS: &str = "details";

/// Temporary column holding a review's split name while splitting.
pub const SPLIT: &str = "split";

pub const KEYWORDS: &str = "keywords";
pub const KEYWORDS_FAILED: &str = "keywords_failed";
pub const BACKEND: &str = "backend";
pub const MODEL: &str = "model";
pub const SUMMARY: &str = "description_summary";
pub const EMBEDDING_TEXT: &str = "embedding_text";
pub const TRAIN_REVIEW_COUNT: &str = "train_review_count";
pub const FIRST_REVIEW_TS: &str = "first_review_ts";
pub const N_KEYWORDS: &str = "n_keywords";
pub const HAS_LLM_SUMMARY: &str = "has_llm_summary";

pub const QUERY: &str = "query";
pub const POSITIVE: &str = "positive";
pub const NEGATIVE: &str = "negative";
pub const NEGATIVE_PARENT_ASIN: &str = "negative_parent_asin";
/// Rank of a mined negative in the miner's top list.
pub const NEGATIVE_RANK: &str = "negative_rank";
pub const QUERY_TYPE: &str = "query_type";

pub const TARGET_PARENT_ASIN: &str = "target_parent_asin";
pub const RANK: &str = "rank";
pub const SCORE: &str = "score";
pub const RETRIEVER: &str = "retriever";

/// Re-ranker outputs: the model's score and the order it gives within each query.
pub const RERANK_SCORE: &str = "rerank_score";
pub const RERANK_RANK: &str = "rerank_rank";
/// Re-ranker training label: 1 for the target item, 0 otherwise.
pub const LABEL: &str = "label";
