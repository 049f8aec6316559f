-- Do long reviews retrieve better than short ones? Recall@10/@100 and MRR of the default run by query length in words.
-- Run from the repo root: duckdb < sql/recall_by_query_length.sql   ($RECSYS_DATA_DIR, default data; $RECSYS_SPLIT, default test)
SET VARIABLE data_dir = coalesce(getenv('RECSYS_DATA_DIR'), 'data');
SET VARIABLE split = coalesce(nullif(getenv('RECSYS_SPLIT'), ''), 'test');
WITH q AS (
    SELECT review_id,
           min(CASE WHEN parent_asin = target_parent_asin THEN rank END) AS hit_rank
    FROM read_parquet(getvariable('data_dir') || '/evaluation/candidates_' || getvariable('split') || '.parquet')
    GROUP BY review_id
),
r AS (
    SELECT review_id,
           len(string_split(trim(coalesce(title, '') || ' ' || coalesce(text, '')), ' ')) AS words
    FROM read_parquet(getvariable('data_dir') || '/processed/reviews_' || getvariable('split') || '.parquet')
)
SELECT CASE WHEN words < 10 THEN 'a: < 10 words'
            WHEN words < 30 THEN 'b: 10-29'
            WHEN words < 100 THEN 'c: 30-99'
            ELSE 'd: 100+' END AS query_length,
       count(*) AS queries,
       round(avg(CASE WHEN hit_rank <= 10 THEN 1 ELSE 0 END), 4) AS recall_at_10,
       round(avg(CASE WHEN hit_rank <= 100 THEN 1 ELSE 0 END), 4) AS recall_at_100,
       round(avg(coalesce(1.0 / hit_rank, 0)), 4) AS mrr
FROM q JOIN r USING (review_id)
GROUP BY 1
ORDER BY 1;
