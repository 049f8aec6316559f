//! Review events and their as-of-time aggregates: for a row at time t, what the events with the
//! same key (item, user, user × store, …) add up to strictly before t (or before t − a window).
//! The re-ranker's time and user features ([`super::features`]) are expressions over them.

use anyhow::Result;
use polars::prelude::*;

use crate::cols;
use crate::context::Ctx;
use crate::io;
use crate::layout::Split;

/// Event aggregates at a query's time: for the events sharing `keys` with the row, strictly
/// before `timestamp − window_days`, columns `{prefix}_n` (count), `{prefix}_rating_sum`,
/// `{prefix}_first` and `{prefix}_last` (timestamps, null when the count is 0).
pub struct AsOf {
    pub prefix: &'static str,
    pub keys: &'static [&'static str],
    pub window_days: i64,
}

/// Every-row key of the catalogue-wide aggregate.
pub const ALL: &str = "_all";

/// The as-of aggregates the features read.
pub const AS_OF: &[AsOf] = &[
    AsOf {
        prefix: "_item",
        keys: &[cols::PARENT_ASIN],
        window_days: 0,
    },
    AsOf {
        prefix: "_item30",
        keys: &[cols::PARENT_ASIN],
        window_days: 30,
    },
    AsOf {
        prefix: "_item90",
        keys: &[cols::PARENT_ASIN],
        window_days: 90,
    },
    AsOf {
        prefix: "_item365",
        keys: &[cols::PARENT_ASIN],
        window_days: 365,
    },
    AsOf {
        prefix: "_all",
        keys: &[ALL],
        window_days: 0,
    },
    AsOf {
        prefix: "_all90",
        keys: &[ALL],
        window_days: 90,
    },
    AsOf {
        prefix: "_user",
        keys: &[cols::USER_ID],
        window_days: 0,
    },
    AsOf {
        prefix: "_user_item",
        keys: &[cols::USER_ID, cols::PARENT_ASIN],
        window_days: 0,
    },
    AsOf {
        prefix: "_user_store",
        keys: &[cols::USER_ID, cols::STORE],
        window_days: 0,
    },
];

/// `c` with empty strings as null.
pub fn no_empty(c: &str) -> Expr {
    when(col(c).eq(lit("")))
        .then(lit(NULL).cast(DataType::String))
        .otherwise(col(c))
        .alias(c)
}

/// Review events of every split — item, user, the item's store, time, rating — and never any
/// review text: what the as-of features count.
pub fn events(ctx: &Ctx) -> Result<LazyFrame> {
    let l = &ctx.layout;
    let mut parts = Vec::new();
    for split in Split::ALL {
        parts.push(io::scan_parquet(&l.reviews(split))?.select([
            col(cols::PARENT_ASIN),
            col(cols::USER_ID),
            col(cols::TIMESTAMP),
            col(cols::RATING).cast(DataType::Float64),
        ]));
    }
    let stores =
        io::scan_parquet(&l.items())?.select([col(cols::PARENT_ASIN), no_empty(cols::STORE)]);
    Ok(concat(parts, UnionArgs::default())?
        .join(
            stores,
            [col(cols::PARENT_ASIN)],
            [col(cols::PARENT_ASIN)],
            JoinArgs::new(JoinType::Left),
        )
        .with_column(lit("").alias(ALL)))
}

/// For every distinct (keys, timestamp) of `probes`: the `events` with the same keys strictly
/// before `timestamp − window_ms` — count `{prefix}_n`, rating sum `{prefix}_rating_sum`,
/// first and last time `{prefix}_first` / `{prefix}_last` (null when none). One sort of probes
/// and events together and running sums per key; a probe sorts before an event of the same
/// time, so an event at exactly the probe's time (the query's own review) is never counted.
/// Rows with a null key get no match.
pub fn as_of(
    events: &LazyFrame,
    probes: &LazyFrame,
    keys: &[&str],
    window_ms: i64,
    prefix: &str,
) -> LazyFrame {
    const AT: &str = "_at";
    const KIND: &str = "_kind";
    const T: &str = "_t";
    let key_cols = || keys.iter().map(|k| col(*k)).collect::<Vec<_>>();
    let not_null = keys
        .iter()
        .map(|k| col(*k).is_not_null())
        .reduce(|a, b| a.and(b))
        .unwrap_or(lit(true));
    let with = |mut v: Vec<Expr>, more: Vec<Expr>| {
        v.extend(more);
        v
    };
    let probe = probes
        .clone()
        .filter(not_null.clone())
        .select(with(key_cols(), vec![col(cols::TIMESTAMP)]))
        .unique(None, UniqueKeepStrategy::Any)
        .select(with(
            key_cols(),
            vec![
                (col(cols::TIMESTAMP) - lit(window_ms)).alias(AT),
                lit(0i32).alias(KIND),
                col(cols::TIMESTAMP).alias(T),
                lit(NULL).cast(DataType::Float64).alias(cols::RATING),
            ],
        ));
    let ev = events.clone().filter(not_null).select(with(
        key_cols(),
        vec![
            col(cols::TIMESTAMP).alias(AT),
            lit(1i32).alias(KIND),
            lit(NULL).cast(DataType::Int64).alias(T),
            col(cols::RATING).cast(DataType::Float64),
        ],
    ));
    let mut by: Vec<&str> = keys.to_vec();
    by.extend([AT, KIND]);
    let name = |s: &str| format!("{prefix}_{s}");
    let is_event = || col(KIND).eq(lit(1i32));
    let running = |e: Expr, alias: String| {
        e.over(key_cols())
            .expect("a window over key columns")
            .alias(alias)
    };
    let any = || col(name("n")).gt(lit(0));
    concat([probe, ev], UnionArgs::default())
        .expect("probes and events share a schema")
        .sort(by, SortMultipleOptions::default())
        .with_columns([
            running(col(KIND).cum_sum(false), name("n")),
            running(
                col(cols::RATING).fill_null(lit(0.0)).cum_sum(false),
                name("rating_sum"),
            ),
            running(
                when(is_event())
                    .then(col(AT))
                    .otherwise(lit(i64::MAX))
                    .cum_min(false),
                name("first"),
            ),
            running(
                when(is_event())
                    .then(col(AT))
                    .otherwise(lit(i64::MIN))
                    .cum_max(false),
                name("last"),
            ),
        ])
        .filter(col(KIND).eq(lit(0i32)))
        .select(with(
            key_cols(),
            vec![
                col(T).alias(cols::TIMESTAMP),
                col(name("n")),
                col(name("rating_sum")),
                when(any())
                    .then(col(name("first")))
                    .otherwise(lit(NULL))
                    .alias(name("first")),
                when(any())
                    .then(col(name("last")))
                    .otherwise(lit(NULL))
                    .alias(name("last")),
            ],
        ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `as_of` against counts worked out by hand: strictly earlier events only (an event at
    /// the probe's own time is not counted), windows, first/last times, no key no match.
    #[test]
    fn as_of_by_hand() {
        let events = df!(
            "parent_asin" => [Some("A"), Some("A"), Some("A"), Some("A"), Some("B"), None],
            "timestamp" => [10i64, 20, 20, 40, 5, 1],
            "rating" => [5.0, 3.0, 1.0, 4.0, 2.0, 5.0],
        )
        .unwrap()
        .lazy();
        let probes = df!(
            "parent_asin" => [Some("A"), Some("A"), Some("A"), Some("B"), Some("C"), Some("A"), None],
            "timestamp" => [20i64, 41, 10, 5, 100, 20, 50],
        )
        .unwrap()
        .lazy();
        let run = |window: i64| {
            let df = as_of(&events, &probes, &["parent_asin"], window, "_p")
                .sort(["parent_asin", "timestamp"], SortMultipleOptions::default())
                .collect()
                .unwrap();
            let get = |c: &str| -> Vec<Option<i64>> {
                df.column(c)
                    .unwrap()
                    .cast(&DataType::Int64)
                    .unwrap()
                    .i64()
                    .unwrap()
                    .iter()
                    .collect()
            };
            let sums: Vec<f64> = df
                .column("_p_rating_sum")
                .unwrap()
                .f64()
                .unwrap()
                .iter()
                .map(|v| v.unwrap())
                .collect();
            (
                get("timestamp"),
                get("_p_n"),
                sums,
                get("_p_first"),
                get("_p_last"),
            )
        };
        // rows: (A,10) (A,20) (A,41) (B,5) (C,100); the duplicate (A,20) and the null key go
        let (ts, n, sum, first, last) = run(0);
        assert_eq!(ts, [Some(10), Some(20), Some(41), Some(5), Some(100)]);
        assert_eq!(n, [Some(0), Some(1), Some(4), Some(0), Some(0)]);
        assert_eq!(sum, [0.0, 5.0, 13.0, 0.0, 0.0]);
        assert_eq!(first, [None, Some(10), Some(10), None, None]);
        assert_eq!(last, [None, Some(10), Some(40), None, None]);
        // 15 before: (A,41) sees what came before 26 (10, 20, 20); (A,20) before 5: nothing
        let (_, n, sum, _, last) = run(15);
        assert_eq!(n, [Some(0), Some(0), Some(3), Some(0), Some(0)]);
        assert_eq!(sum, [0.0, 0.0, 9.0, 0.0, 0.0]);
        assert_eq!(last, [None, None, Some(20), None, None]);
    }
}
