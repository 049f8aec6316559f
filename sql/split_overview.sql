-- How many reviews, users and items each time split holds, and the dates it spans.
-- Run from the repo root: duckdb < sql/split_overview.sql   (data root: $RECSYS_DATA_DIR, default data)
SET VARIABLE data_dir = coalesce(getenv('RECSYS_DATA_DIR'), 'data');
SELECT regexp_extract(filename, 'reviews_(\w+)\.parquet', 1) AS split,
       count(*) AS reviews,
       count(DISTINCT user_id) AS users,
       count(DISTINCT parent_asin) AS items,
       round(avg(rating), 2) AS avg_rating,
       sum(CASE WHEN trim(text) = '' THEN 1 ELSE 0 END) AS empty_texts,
       make_timestamp(min(timestamp) * 1000) AS first_review,
       make_timestamp(max(timestamp) * 1000) AS last_review
FROM read_parquet(getvariable('data_dir') || '/processed/reviews_*.parquet', filename = true)
GROUP BY split
ORDER BY first_review;
