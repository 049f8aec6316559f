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
