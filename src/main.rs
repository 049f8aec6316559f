//! The `recsys` command line: argument parsing and dispatch only; the work lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use recsys::Ctx;
use recsys::data::synth::{self, SynthConfig};
use recsys::etl::build_items::{self, BuildItemsConfig};
use recsys::etl::keywords::{self, KeywordsConfig};
use recsys::etl::pairs::{self, PairsConfig};
use recsys::etl::split::{self, SplitConfig};
use recsys::etl::summaries::{self, SummariesConfig};
use recsys::eval::{self, EvalConfig};
use recsys::index::{self, IndexBuildConfig, SearchConfig};
use recsys::rank::{self, RankerConfig, RerankConfig};
use recsys::retrieve::{self, RetrieveConfig};
use recsys::train::negatives::{self, MineConfig};
use recsys::train::retriever::{self, RetrieverConfig};

#[derive(Parser, Debug)]
#[command(
    name = "recsys",
    version,
    about = "Product reviews → a two-stage recommender (retrieval + re-ranking)"
)]
struct Cli {
    /// Data root: every stage reads and writes under it (raw/, processed/, lancedb/, evaluation/)
    #[arg(long, global = true, default_value = "data", env = "RECSYS_DATA_DIR")]
    data_dir: PathBuf,
    /// Amazon Reviews 2023 category: reads raw/{CATEGORY}.jsonl[.gz] and raw/meta_{CATEGORY}.jsonl[.gz]
    #[arg(long, global = true, default_value = "All_Beauty")]
    category: String,
    /// Seed for every random choice (same inputs and seed give the same outputs)
    #[arg(long, global = true, default_value_t = 42)]
    seed: u64,
    /// Hide progress bars and summaries
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Raw data: synthetic Amazon Reviews 2023-shaped files
    #[command(subcommand)]
    Data(DataCommand),
    /// ETL: time split, keywords, description summaries, the item table
    #[command(subcommand)]
    Etl(EtlCommand),
    /// The LanceDB item index: encode items.parquet into data/lancedb (table `items`)
    #[command(subcommand)]
    Index(IndexCommand),
    /// Ad-hoc search of the item index: top-k items (title, parent_asin, score) for a query
    Search(SearchConfig),
    /// Fine-tuning data and models: pairs, retriever, mine-negatives, ranker
    #[command(subcommand)]
    Train(TrainCommand),
    /// Top-K candidate items per review of a split → evaluation/candidates_{split}[_{name}].parquet
    Retrieve(RetrieveConfig),
    /// Recall@K and MRR of every candidates file of a split, and NDCG@5 of stage-1 vs re-ranked
    /// order: tables, metrics_{split}.json, recall_{split}.svg
    Eval(EvalConfig),
    /// Re-rank a split's candidates with the XGBoost ranker → evaluation/reranked_{split}.parquet
    Rerank(RerankConfig),
    /// Run every stage in order (not implemented yet)
    Pipeline(NotYet),
}

#[derive(Subcommand, Debug)]
enum DataCommand {
    /// Write synthetic reviews, metadata and ground truth in the exact 2023 schema
    Synth(SynthConfig),
}

#[derive(Subcommand, Debug)]
enum EtlCommand {
    /// Time-based split → processed/reviews_{train,valid,test}.parquet
    Split(SplitConfig),
    /// WHO/WHEN/WHY keywords per review → processed/keywords_{split}.parquet
    Keywords(KeywordsConfig),
    /// LLM summaries of long item descriptions → processed/summaries.parquet (cached)
    Summaries(SummariesConfig),
    /// The item table → processed/items.parquet (runs missing split/keywords/summaries first)
    BuildItems(BuildItemsConfig),
}

#[derive(Subcommand, Debug)]
enum IndexCommand {
    /// Encode every item's embedding_text → LanceDB table `items` + full-text (BM25) index;
    /// replaces an existing table atomically
    Build(IndexBuildConfig),
}

#[derive(Subcommand, Debug)]
enum TrainCommand {
    /// (query, positive[, negative]) rows from TRAIN reviews → processed/training_pairs.parquet
    Pairs(PairsConfig),
    /// Contrastive fine-tuning of the encoder (in-batch negatives, same-item masking) →
    /// models/{base}-finetuned-{YYYYMMDD-HHMMSS}/ (resumable with --resume)
    Retriever(RetrieverConfig),
    /// Hard negatives from the current model (ranks 10–100) → processed/training_pairs_mined.parquet
    MineNegatives(MineConfig),
    /// XGBoost learning-to-rank (rank:ndcg) over TRAIN candidates, early stopping on VALID →
    /// models/ranker-{YYYYMMDD-HHMMSS}/
    Ranker(RankerConfig),
}

/// A command that exists in the design but is not built yet: it takes any arguments and exits 2.
#[derive(Args, Debug)]
struct NotYet {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    args: Vec<String>,
}

fn not_implemented(what: &str) -> ExitCode {
    eprintln!(
        "recsys {what}: not implemented yet (see DESIGN.md and the open issues); nothing was written"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    recsys::alloc::keep_freed_memory();
    let cli = Cli::parse();
    let ctx = Ctx::new(&cli.data_dir, &cli.category, cli.seed, cli.quiet);
    let result: anyhow::Result<String> = match &cli.command {
        Command::Data(DataCommand::Synth(cfg)) => synth::run(&ctx, cfg).map(|s| s.to_string()),
        Command::Etl(EtlCommand::Split(cfg)) => split::run(&ctx, cfg).map(|s| s.to_string()),
        Command::Etl(EtlCommand::Keywords(cfg)) => keywords::run(&ctx, cfg).map(|s| s.to_string()),
        Command::Etl(EtlCommand::Summaries(cfg)) => {
            summaries::run(&ctx, cfg).map(|s| s.to_string())
        }
        Command::Etl(EtlCommand::BuildItems(cfg)) => {
            build_items::run(&ctx, cfg).map(|s| s.to_string())
        }
        Command::Index(IndexCommand::Build(cfg)) => index::build(&ctx, cfg).map(|s| s.to_string()),
        Command::Search(cfg) => index::search(&ctx, cfg).map(|s| s.to_string()),
        Command::Train(TrainCommand::Pairs(cfg)) => pairs::run(&ctx, cfg).map(|s| s.to_string()),
        Command::Train(TrainCommand::Retriever(cfg)) => {
            retriever::run(&ctx, cfg).map(|s| s.to_string())
        }
        Command::Train(TrainCommand::MineNegatives(cfg)) => {
            negatives::run(&ctx, cfg).map(|s| s.to_string())
        }
        Command::Train(TrainCommand::Ranker(cfg)) => rank::train(&ctx, cfg).map(|s| s.to_string()),
        Command::Retrieve(cfg) => retrieve::run(&ctx, cfg).map(|s| s.to_string()),
        Command::Eval(cfg) => eval::run(&ctx, cfg).map(|s| s.to_string()),
        Command::Rerank(cfg) => rank::rerank(&ctx, cfg).map(|s| s.to_string()),
        Command::Pipeline(_) => return not_implemented("pipeline"),
    };
    match result {
        Ok(summary) => {
            if !cli.quiet {
                println!("{summary}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// clap's own consistency checks over every subcommand (flattened groups included).
    #[test]
    fn command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
