-- Which review keywords describe the most items (a quick check for generic words that slipped through).
-- Run from the repo root: duckdb < sql/top_item_keywords.sql   (data root: $RECSYS_DATA_DIR, default data)
SET VARIABLE data_dir = coalesce(getenv('RECSYS_DATA_DIR'), 'data');
SELECT keyword, count(*) AS items
FROM (SELECT unnest(keywords) AS keyword FROM read_parquet(getvariable('data_dir') || '/processed/items.parquet'))
GROUP BY keyword
ORDER BY items DESC, keyword
LIMIT 25;
