-- Where did re-ranking move each query's target? By stage-1 rank band: queries, how many moved up / down / stayed, mean rank before and after, and the share in the top 5 before and after.
-- Run from the repo root after `recsys rerank`: duckdb < sql/rerank_gains.sql   ($RECSYS_DATA_DIR, default data; $RECSYS_SPLIT, default test)
SET VARIABLE data_dir = coalesce(getenv('RECSYS_DATA_DIR'), 'data');
SET VARIABLE split = coalesce(nullif(getenv('RECSYS_SPLIT'), ''), 'test');
WITH q AS (
    SELECT review_id,
           min(CASE WHEN parent_asin = target_parent_asin THEN rank END) AS before,
           min(CASE WHEN parent_asin = target_parent_asin THEN rerank_rank END) AS after
    FROM read_parquet(getvariable('data_dir') || '/evaluation/reranked_' || getvariable('split') || '.parquet')
    GROUP BY review_id
),
banded AS (
    SELECT *,
           CASE WHEN before IS NULL THEN '6 not retrieved'
                WHEN before = 1 THEN '1 rank 1'
                WHEN before <= 5 THEN '2 rank 2-5'
                WHEN before <= 10 THEN '3 rank 6-10'
                WHEN before <= 20 THEN '4 rank 11-20'
                ELSE '5 rank 21+' END AS stage1_band
    FROM q
)
SELECT stage1_band,
       count(*) AS queries,
       count(*) FILTER (WHERE after < before) AS moved_up,
       count(*) FILTER (WHERE after > before) AS moved_down,
       count(*) FILTER (WHERE after = before) AS same,
       round(avg(before), 2) AS mean_rank_before,
       round(avg(after), 2) AS mean_rank_after,
       round(avg(CASE WHEN before <= 5 THEN 1 ELSE 0 END), 4) AS top5_before,
       round(avg(CASE WHEN after <= 5 THEN 1 ELSE 0 END), 4) AS top5_after
FROM banded
GROUP BY stage1_band
ORDER BY stage1_band;
