-- How complete the item table is: keyword coverage and which embedding_text sections are empty.
-- Run from the repo root: duckdb < sql/items_overview.sql   (data root: $RECSYS_DATA_DIR, default data)
SET VARIABLE data_dir = coalesce(getenv('RECSYS_DATA_DIR'), 'data');
SELECT count(*) AS items,
       sum(CASE WHEN train_review_count > 0 THEN 1 ELSE 0 END) AS with_train_reviews,
       sum(CASE WHEN n_keywords > 0 THEN 1 ELSE 0 END) AS with_keywords,
       round(avg(n_keywords), 1) AS avg_keywords,
       sum(CASE WHEN title IS NULL OR title = '' THEN 1 ELSE 0 END) AS no_title,
       sum(CASE WHEN len(description) = 0 THEN 1 ELSE 0 END) AS no_description,
       sum(CASE WHEN len(features) = 0 THEN 1 ELSE 0 END) AS no_features,
       sum(CASE WHEN has_llm_summary THEN 1 ELSE 0 END) AS llm_summaries,
       sum(CASE WHEN price IS NULL THEN 1 ELSE 0 END) AS no_price,
       round(avg(length(embedding_text))) AS avg_text_chars
FROM read_parquet(getvariable('data_dir') || '/processed/items.parquet');
