-- Which items does the default run miss most? Items with at least 2 queries, lowest Recall@10 first.
-- Run from the repo root: duckdb < sql/worst_served_items.sql   ($RECSYS_DATA_DIR, default data; $RECSYS_SPLIT, default test)
SET VARIABLE data_dir = coalesce(getenv('RECSYS_DATA_DIR'), 'data');
SET VARIABLE split = coalesce(nullif(getenv('RECSYS_SPLIT'), ''), 'test');
WITH q AS (
    SELECT review_id,
           any_value(target_parent_asin) AS target,
           min(CASE WHEN parent_asin = target_parent_asin THEN rank END) AS hit_rank
    FROM read_parquet(getvariable('data_dir') || '/evaluation/candidates_' || getvariable('split') || '.parquet')
    GROUP BY review_id
)
SELECT q.target AS parent_asin,
       any_value(i.title) AS title,
       any_value(i.train_review_count) AS train_reviews,
       count(*) AS queries,
       round(avg(CASE WHEN hit_rank <= 10 THEN 1 ELSE 0 END), 4) AS recall_at_10,
       round(avg(coalesce(hit_rank, 999)), 1) AS mean_rank_999_if_missed
FROM q JOIN read_parquet(getvariable('data_dir') || '/processed/items.parquet') i ON i.parent_asin = q.target
GROUP BY q.target
HAVING count(*) >= 2
ORDER BY recall_at_10, mean_rank_999_if_missed DESC, queries DESC
LIMIT 25;
