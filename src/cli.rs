//! Shared by every stage config: defaults come from the clap definitions alone, so a default is
//! written once (in its `#[arg(default_value…)]`) and the CLI, the library's `Default`, the tests
//! and the benches cannot drift apart.

/// A config with every flag at its clap default (what the command line gives when no flag is
/// passed). Panics when the config has a required argument: such a config has no default.
pub fn defaults<T: clap::Args>() -> T {
    let cmd = T::augment_args(clap::Command::new("defaults").no_binary_name(true));
    let m = cmd
        .try_get_matches_from(std::iter::empty::<&str>())
        .unwrap_or_else(|e| panic!("{}: no default without arguments: {e}", type_name::<T>()));
    T::from_arg_matches(&m)
        .unwrap_or_else(|e| panic!("{}: defaults do not parse: {e}", type_name::<T>()))
}

fn type_name<T>() -> &'static str {
    std::any::type_name::<T>()
}

/// `impl Default` through [`defaults`] for each listed config.
macro_rules! clap_default {
    ($($t:ty),+ $(,)?) => {
        $(impl Default for $t {
            fn default() -> Self {
                $crate::cli::defaults()
            }
        })+
    };
}
pub(crate) use clap_default;

/// The largest count any flag accepts (items, reviews, steps, batch rows, tokens, …): beyond it a
/// value is a typo, not a plan.
pub const MAX_COUNT: u64 = 1_000_000_000;

/// A whole number in `MIN..=MAX` as `T`: the value parser behind every integer flag (and so every
/// integer settings key, which reaches clap as a flag). clap prefixes its message with the flag.
pub fn int<T: TryFrom<u64>, const MIN: u64, const MAX: u64>(s: &str) -> Result<T, String> {
    let range = || format!("a whole number from {MIN} to {MAX}");
    let v: u64 = s
        .trim()
        .parse()
        .map_err(|_| format!("expected {}", range()))?;
    if !(MIN..=MAX).contains(&v) {
        return Err(format!("{v} is out of range: expected {}", range()));
    }
    T::try_from(v).map_err(|_| format!("{v} is out of range: expected {}", range()))
}

/// A count of at least 1.
pub fn count(s: &str) -> Result<usize, String> {
    int::<usize, 1, MAX_COUNT>(s)
}

/// A count where 0 means none.
pub fn count0(s: &str) -> Result<usize, String> {
    int::<usize, 0, MAX_COUNT>(s)
}

/// A count of at least 1, for APIs that take `u32`.
pub fn count_u32(s: &str) -> Result<u32, String> {
    int::<u32, 1, 1_000_000>(s)
}

/// A count where 0 means none, for APIs that take `u32`.
pub fn count0_u32(s: &str) -> Result<u32, String> {
    int::<u32, 0, 1_000>(s)
}

/// A token length (sequence cap): 2 (the special tokens) to 65,536.
pub fn tokens(s: &str) -> Result<usize, String> {
    int::<usize, 2, 65_536>(s)
}

/// Requests in flight at once: 1 to 1,024.
pub fn concurrency(s: &str) -> Result<usize, String> {
    int::<usize, 1, 1_024>(s)
}

/// A tree depth: 1 to 32.
pub fn depth(s: &str) -> Result<u32, String> {
    int::<u32, 1, 32>(s)
}

/// A finite number inside `lo..hi` (each end included or not as asked).
fn real(s: &str, lo: (f64, bool), hi: (f64, bool)) -> Result<f64, String> {
    let range = || {
        format!(
            "a number {} {} and {} {}",
            if lo.1 { "≥" } else { ">" },
            lo.0,
            if hi.1 { "≤" } else { "<" },
            hi.0
        )
    };
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("expected {}", range()))?;
    let above = if lo.1 { v >= lo.0 } else { v > lo.0 };
    let below = if hi.1 { v <= hi.0 } else { v < hi.0 };
    if !v.is_finite() || !above || !below {
        return Err(format!("{v} is out of range: expected {}", range()));
    }
    Ok(v)
}

/// Seconds of a timeout: more than 0, at most a week.
pub fn seconds(s: &str) -> Result<f64, String> {
    real(s, (0.0, false), (7.0 * 86_400.0, true))
}

/// A share from 0 to 1, ends included.
pub fn fraction(s: &str) -> Result<f64, String> {
    real(s, (0.0, true), (1.0, true))
}

/// A share strictly between 0 and 1.
pub fn open_fraction(s: &str) -> Result<f64, String> {
    real(s, (0.0, false), (1.0, false))
}

/// A positive rate or scale (learning rate, temperature, clip norm): more than 0, at most 1e6.
pub fn positive(s: &str) -> Result<f64, String> {
    real(s, (0.0, false), (1e6, true))
}

/// A non-negative rate (weight decay): 0 to 1e6.
pub fn non_negative(s: &str) -> Result<f64, String> {
    real(s, (0.0, true), (1e6, true))
}

/// A time in milliseconds since 1970, from 1970 to 2100.
pub fn millis(s: &str) -> Result<i64, String> {
    int::<i64, 0, 4_102_444_800_000>(s)
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_config_default_is_its_clap_default() {
        let r = crate::retrieve::RetrieveConfig::default();
        assert_eq!((r.top_k, r.encoder.batch_size, r.nprobes), (100, 64, 20));
        assert_eq!(
            r.query.max_keywords,
            crate::retrieve::query::DEFAULT_MAX_KEYWORDS
        );
        assert_eq!(r.query.query_type, crate::retrieve::QueryType::ReviewText);
        let t = crate::train::config::RetrieverConfig::default();
        assert_eq!(
            (t.batch_size, t.max_query_len, t.eval_max_keywords),
            (16, 256, 20)
        );
        assert_eq!(crate::encoder::EncoderArgs::default().batch_size, 32);
        assert_eq!(crate::etl::pairs::PairsConfig::default().max_keywords, 20);
        assert_eq!(crate::rank::RankerConfig::default().num_rounds, 500);
        assert_eq!(crate::rank::RankerConfig::default().holdout, 0.25);
        assert_eq!(
            crate::train::negatives::MineConfig::default().window_end,
            100
        );
        assert_eq!(
            crate::etl::build_items::BuildItemsConfig::default().top_keywords,
            30
        );
        let _ = (
            crate::rank::RerankConfig::default(),
            crate::etl::split::SplitConfig::default(),
            crate::etl::keywords::KeywordsConfig::default(),
            crate::etl::summaries::SummariesConfig::default(),
            crate::data::synth::SynthConfig::default(),
            crate::llm::LlmArgs::default(),
        );
    }
}
