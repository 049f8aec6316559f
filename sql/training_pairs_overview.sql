-- What the retriever is trained on: rows per query type, query lengths, and the most frequent positives.
-- Run from the repo root: duckdb < sql/training_pairs_overview.sql   (data root: $RECSYS_DATA_DIR, default data)
SET VARIABLE data_dir = coalesce(getenv('RECSYS_DATA_DIR'), 'data');
SELECT query_type,
       count(*) AS rows,
       count(DISTINCT parent_asin) AS items,
       round(avg(length(query))) AS avg_query_chars,
       max(cnt) AS most_rows_for_one_item
FROM (SELECT *, count(*) OVER (PARTITION BY parent_asin) AS cnt
      FROM read_parquet(getvariable('data_dir') || '/processed/training_pairs.parquet'))
GROUP BY query_type
ORDER BY query_type;
