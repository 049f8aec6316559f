-- Is the default run good for cold items? Recall@10/@100 and MRR by the target's TRAIN review count.
-- Run from the repo root: duckdb < sql/recall_by_item_popularity.sql   ($RECSYS_DATA_DIR, default data; $RECSYS_SPLIT, default test)
SET VARIABLE data_dir = coalesce(getenv('RECSYS_DATA_DIR'), 'data');
SET VARIABLE split = coalesce(nullif(getenv('RECSYS_SPLIT'), ''), 'test');
WITH q AS (
    SELECT review_id,
           any_value(target_parent_asin) AS target,
           min(CASE WHEN parent_asin = target_parent_asin THEN rank END) AS hit_rank
    FROM read_parquet(getvariable('data_dir') || '/evaluation/candidates_' || getvariable('split') || '.parquet')
    GROUP BY review_id
)
SELECT CASE WHEN i.train_review_count = 0 THEN 'a: 0 (cold)'
            WHEN i.train_review_count = 1 THEN 'b: 1'
            WHEN i.train_review_count < 5 THEN 'c: 2-4'
            WHEN i.train_review_count < 20 THEN 'd: 5-19'
            ELSE 'e: 20+' END AS target_train_reviews,
       count(*) AS queries,
       round(avg(CASE WHEN hit_rank <= 10 THEN 1 ELSE 0 END), 4) AS recall_at_10,
       round(avg(CASE WHEN hit_rank <= 100 THEN 1 ELSE 0 END), 4) AS recall_at_100,
       round(avg(coalesce(1.0 / hit_rank, 0)), 4) AS mrr
FROM q JOIN read_parquet(getvariable('data_dir') || '/processed/items.parquet') i ON i.parent_asin = q.target
GROUP BY 1
ORDER BY 1;
