//! The `recsys` command line: argument parsing and dispatch only; the work lives in the library.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use recsys::Ctx;
use recsys::config::{self, Settings};
use recsys::data::synth::{self, SynthConfig};
use recsys::encoder::probe::{self, ProbeConfig};
use recsys::etl::build_items::{self, BuildItemsConfig};
use recsys::etl::keywords::{self, KeywordsConfig};
use recsys::etl::pairs::{self, PairsConfig};
use recsys::etl::split::{self, SplitConfig};
use recsys::etl::summaries::{self, SummariesConfig};
use recsys::eval::{self, EvalConfig};
use recsys::index::{self, IndexBuildConfig, SearchConfig};
use recsys::lock::RootLock;
use recsys::pipeline::{self, PipelineConfig};
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
    /// Settings file: a [section] per stage, keys named as the flags (`recsys config init` writes
    /// one); flags on the command line win [default: ./recsys.toml when it exists]
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Item index table: `items` (default) or `items_{NAME}`, e.g. `--index finetuned` for the
    /// fine-tuned model's vectors beside the base model's
    #[arg(long, global = true, value_name = "NAME")]
    index: Option<String>,
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
    /// Every stage in order, each only when missing or stale (settings or inputs changed), from
    /// the settings file; ends with evaluation/report.md
    Pipeline(PipelineConfig),
    /// One line per pipeline stage: up to date or stale (and why), when made, time, peak memory
    Status,
    /// The settings file: show the effective settings, or write a commented default file
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Developer probes for machines without a Rust toolchain (scripts/device_check.sh)
    #[command(subcommand, hide = true)]
    Debug(DebugCommand),
}

#[derive(Subcommand, Debug)]
enum DebugCommand {
    /// The encoder timed (forward, train-step) or dumped (encode, grads) on a device
    Probe(ProbeConfig),
    /// Every numeric flag of every command, one per line: `COMMAND<TAB>--FLAG<TAB>REQUIRED ARGUMENTS`
    /// (the hostile-value test walks them; the global flags are listed under `status`)
    Flags,
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Print every stage's effective settings (file values and defaults, marked)
    Show,
    /// Write a commented settings file with every key at its default (to --config, else
    /// ./recsys.toml)
    Init {
        /// Overwrite an existing file
        #[arg(long)]
        force: bool,
    },
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

impl Command {
    /// The stage name a command holds the data root's writer lock under; `None` for the
    /// read-only commands (status, search, eval of existing files, config, debug).
    fn writes_data_root(&self) -> Option<&'static str> {
        Some(match self {
            Command::Data(DataCommand::Synth(_)) => "data synth",
            Command::Etl(EtlCommand::Split(_)) => "etl split",
            Command::Etl(EtlCommand::Keywords(_)) => "etl keywords",
            Command::Etl(EtlCommand::Summaries(_)) => "etl summaries",
            Command::Etl(EtlCommand::BuildItems(_)) => "etl build-items",
            Command::Index(IndexCommand::Build(_)) => "index build",
            Command::Train(TrainCommand::Pairs(_)) => "train pairs",
            Command::Train(TrainCommand::Retriever(_)) => "train retriever",
            Command::Train(TrainCommand::MineNegatives(_)) => "train mine-negatives",
            Command::Train(TrainCommand::Ranker(_)) => "train ranker",
            Command::Retrieve(_) => "retrieve",
            Command::Rerank(_) => "rerank",
            Command::Pipeline(_) => "pipeline",
            Command::Search(_)
            | Command::Eval(_)
            | Command::Status
            | Command::Config(_)
            | Command::Debug(_) => return None,
        })
    }
}

/// The lines of `recsys debug flags`.
fn numeric_flags() -> String {
    use std::any::TypeId;
    fn numeric(a: &clap::Arg) -> bool {
        let t = a.get_value_parser().type_id();
        [
            TypeId::of::<u8>(),
            TypeId::of::<u16>(),
            TypeId::of::<u32>(),
            TypeId::of::<u64>(),
            TypeId::of::<usize>(),
            TypeId::of::<i32>(),
            TypeId::of::<i64>(),
            TypeId::of::<f32>(),
            TypeId::of::<f64>(),
        ]
        .into_iter()
        .any(|n| t == n)
    }
    fn walk(cmd: &clap::Command, path: &[&str], out: &mut Vec<String>) {
        let carrier = if path.is_empty() {
            "status".to_string()
        } else {
            path.join(" ")
        };
        // What a run needs besides the flag under test: each required argument, with its first
        // possible value (or `x`).
        let required: Vec<String> = cmd
            .get_arguments()
            .filter(|a| a.is_required_set())
            .map(|a| {
                let v = a
                    .get_possible_values()
                    .first()
                    .map_or("x".to_string(), |p| p.get_name().to_string());
                match a.get_long() {
                    Some(long) => format!("--{long}={v}"),
                    None => v,
                }
            })
            .collect();
        for a in cmd.get_arguments().filter(|a| numeric(a)) {
            if let Some(long) = a
                .get_long()
                .filter(|_| path.is_empty() || !a.is_global_set())
            {
                out.push(format!("{carrier}\t--{long}\t{}", required.join(" ")));
            }
        }
        for sub in cmd.get_subcommands() {
            let mut p = path.to_vec();
            p.push(sub.get_name());
            walk(sub, &p, out);
        }
    }
    let mut out = Vec::new();
    walk(&Cli::command(), &[], &mut out);
    out.join("\n")
}

/// `--config FILE` / `--config=FILE` of the raw command line.
fn config_flag(argv: &[OsString]) -> Option<PathBuf> {
    let mut it = argv.iter();
    while let Some(a) = it.next() {
        let a = a.to_string_lossy();
        if a == "--" {
            break;
        }
        if a == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(v) = a.strip_prefix("--config=") {
            return Some(PathBuf::from(v));
        }
    }
    None
}

/// The command line with the settings file's values spliced in before the flags given.
fn parse() -> Result<(Cli, Settings), ExitCode> {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let root = config::overriding(Cli::command());
    let path = config::subcommand_path(&root, &argv);
    let init = path.iter().map(String::as_str).eq(["config", "init"]);
    let settings = match config_flag(&argv) {
        _ if init => Ok(Settings::default()),
        explicit => Settings::load(explicit.as_deref()),
    };
    let settings = settings.map_err(|e| {
        eprintln!("error: {e:#}");
        ExitCode::from(2)
    })?;
    let argv = settings.splice(&root, argv);
    let m = root.get_matches_from(argv);
    let cli = Cli::from_arg_matches(&m).unwrap_or_else(|e| e.exit());
    Ok((cli, settings))
}

fn config_init(cli: &Cli, force: bool) -> anyhow::Result<String> {
    let path = cli
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(config::DEFAULT_FILE));
    anyhow::ensure!(
        force || !path.exists(),
        "{} exists; pass --force to overwrite it",
        path.display()
    );
    recsys::io::write_atomic(&path, |tmp| {
        std::fs::write(tmp, config::template()).map_err(anyhow::Error::from)
    })?;
    Ok(format!(
        "wrote {} (every key at its default, commented out)",
        path.display()
    ))
}

fn main() -> ExitCode {
    recsys::alloc::keep_freed_memory();
    // Past a file-size limit (`ulimit -f`) the kernel kills the writer with SIGXFSZ; ignored,
    // the write fails with EFBIG and ends like a full disk: an error naming the file, the
    // earlier outputs intact (every output is written under a temporary name).
    // SAFETY: setting a signal's disposition to SIG_IGN at start-up, before any thread exists.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    let (cli, settings) = match parse() {
        Ok(x) => x,
        Err(code) => return code,
    };
    let mut ctx = Ctx::new(&cli.data_dir, &cli.category, cli.seed, cli.quiet);
    ctx.layout.index = cli.index.clone();
    if let Some(stage) = cli.command.writes_data_root() {
        match RootLock::acquire(&cli.data_dir, stage) {
            Ok(lock) => {
                if let Some(dead) = &lock.taken_over {
                    eprintln!(
                        "warning: data root {1}: taking over the lock left by {0}, which is \
                         no longer running",
                        dead,
                        cli.data_dir.display()
                    );
                }
                ctx.lock = Some(std::sync::Arc::new(lock));
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                return ExitCode::FAILURE;
            }
        }
    }
    let result: anyhow::Result<String> = match &cli.command {
        Command::Data(DataCommand::Synth(cfg)) => synth::run(&ctx, cfg).map(|s| s.to_string()),
        Command::Etl(EtlCommand::Split(cfg)) => split::run(&ctx, cfg).map(|s| s.to_string()),
        Command::Etl(EtlCommand::Keywords(cfg)) => keywords::run(&ctx, cfg).map(|s| s.to_string()),
        Command::Etl(EtlCommand::Summaries(cfg)) => {
            summaries::run(&ctx, cfg).map(|s| s.to_string())
        }
        Command::Etl(EtlCommand::BuildItems(cfg)) => pipeline::build_items_upstream(&settings)
            .and_then(|up| build_items::run_with(&ctx, cfg, &up))
            .map(|s| s.to_string()),
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
        Command::Pipeline(cfg) => pipeline::run(&ctx, cfg, &settings).map(|s| s.to_string()),
        Command::Status => settings
            .config::<PipelineConfig>("pipeline", &[])
            .and_then(|pc| pipeline::status(&ctx, &pc, &settings)),
        Command::Config(ConfigCommand::Show) => Ok(config::show(
            &settings,
            &[
                ("data_dir", cli.data_dir.display().to_string()),
                ("category", cli.category.clone()),
                ("seed", cli.seed.to_string()),
            ],
        )),
        Command::Config(ConfigCommand::Init { force }) => config_init(&cli, *force),
        Command::Debug(DebugCommand::Probe(cfg)) => probe::run(cfg),
        Command::Debug(DebugCommand::Flags) => Ok(numeric_flags()),
    };
    match result {
        Ok(summary) => {
            let printed = match cli.quiet {
                true => Ok(()),
                false => recsys::io::print_line(&summary),
            };
            match printed {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: writing the summary to stdout: {e}");
                    ExitCode::FAILURE
                }
            }
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
