//! `recsys.toml`: every stage's settings in one file.
//!
//! A section per stage (`[retrieve]`, `[train_retriever]`, …) whose keys are that command's long
//! flags with `_` for `-` (`top_k = 50` is `--top-k 50`); top-level keys are the global flags
//! (`data_dir`, `category`, `seed`). A file value is turned into the flag it names and parsed by
//! the stage's own clap definition, so the names, the defaults and the validation of the file and
//! of the command line are one and the same. On the command line a flag wins over the file.
//! `true` sets a switch (`ablation = true` is `--ablation`); `false` leaves it off.

mod show;

pub use show::{show, template};

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{ArgAction, Command};

/// The file read when `--config` is not given, if it exists in the working directory.
pub const DEFAULT_FILE: &str = "recsys.toml";

/// Top-level keys: global flags of every command.
pub const GLOBAL_KEYS: [&str; 3] = ["data_dir", "category", "seed"];

/// One section of the file: the command whose flags it holds.
pub struct Section {
    pub name: &'static str,
    /// The subcommand path on the command line (`["train", "retriever"]`).
    pub command: &'static [&'static str],
    pub about: &'static str,
    /// The command's flags (clap definition of its config).
    pub args: fn() -> Command,
}

pub(crate) fn cmd<T: clap::Args>(name: &'static str) -> Command {
    T::augment_args(Command::new(name).no_binary_name(true))
}

/// Every section, in pipeline order.
pub fn sections() -> Vec<Section> {
    use crate::pipeline::stages::PipelineConfig;
    use crate::{data, etl, eval, index, rank, retrieve, train};
    macro_rules! s {
        ($name:literal, $path:expr, $about:literal, $t:ty) => {
            Section {
                name: $name,
                command: $path,
                about: $about,
                args: || cmd::<$t>($name),
            }
        };
    }
    vec![
        s!(
            "pipeline",
            &["pipeline"],
            "`recsys pipeline`: which optional stages run",
            PipelineConfig
        ),
        s!(
            "synth",
            &["data", "synth"],
            "`recsys data synth` (not part of the pipeline: it makes raw/)",
            data::synth::SynthConfig
        ),
        s!(
            "split",
            &["etl", "split"],
            "`recsys etl split`: the time split",
            etl::split::SplitConfig
        ),
        s!(
            "keywords",
            &["etl", "keywords"],
            "`recsys etl keywords` (the pipeline runs it on every split)",
            etl::keywords::KeywordsConfig
        ),
        s!(
            "summaries",
            &["etl", "summaries"],
            "`recsys etl summaries`: descriptions summaries",
            etl::summaries::SummariesConfig
        ),
        s!(
            "build_items",
            &["etl", "build-items"],
            "`recsys etl build-items`: the item table",
            etl::build_items::BuildItemsConfig
        ),
        s!(
            "pairs",
            &["train", "pairs"],
            "`recsys train pairs`: fine-tuning pairs",
            etl::pairs::PairsConfig
        ),
        s!(
            "index",
            &["index", "build"],
            "`recsys index build` (the pipeline's re-index takes these too, with the fine-tuned model)",
            index::IndexBuildConfig
        ),
        s!(
            "retrieve",
            &["retrieve"],
            "`recsys retrieve` (the pipeline sets split, name and model itself)",
            retrieve::RetrieveConfig
        ),
        s!(
            "train_retriever",
            &["train", "retriever"],
            "`recsys train retriever`: contrastive fine-tuning",
            train::retriever::RetrieverConfig
        ),
        s!(
            "mine_negatives",
            &["train", "mine-negatives"],
            "`recsys train mine-negatives` (not part of the pipeline)",
            train::negatives::MineConfig
        ),
        s!(
            "train_ranker",
            &["train", "ranker"],
            "`recsys train ranker`: the XGBoost re-ranker",
            rank::RankerConfig
        ),
        s!("rerank", &["rerank"], "`recsys rerank`", rank::RerankConfig),
        s!("eval", &["eval"], "`recsys eval`", eval::EvalConfig),
    ]
}

/// The section of a subcommand path, if it has one.
pub fn section_of(path: &[String]) -> Option<Section> {
    sections().into_iter().find(|s| {
        s.command
            .iter()
            .copied()
            .eq(path.iter().map(String::as_str))
    })
}

/// A loaded settings file: every key turned into command-line arguments, checked.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// The file, or `None` when no file is in use (every setting at its default).
    pub path: Option<PathBuf>,
    /// Global flags from the top-level keys.
    pub globals: Vec<OsString>,
    /// Per section: its keys as flags, in file order.
    pub sections: BTreeMap<String, Vec<OsString>>,
}

/// The flag name of a key: `top_k` → `top-k`.
fn flag(key: &str) -> String {
    key.replace('_', "-")
}

/// Line (1-based) of `key` inside `[section]` (or at the top level for `None`) in `text`.
fn line_of(text: &str, section: Option<&str>, key: &str) -> Option<usize> {
    let mut current: Option<String> = None;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if let Some(h) = t.strip_prefix('[') {
            current = Some(h.trim_end_matches(']').trim().to_string());
            continue;
        }
        let Some((k, _)) = t.split_once('=') else {
            continue;
        };
        let k = k.trim().trim_matches('"');
        if current.as_deref() == section && k == key {
            return Some(i + 1);
        }
    }
    None
}

fn section_line(text: &str, section: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            l.trim()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .trim()
                == section
        })
        .map(|i| i + 1)
}

/// A TOML value as the text of a flag value, or why it cannot be one.
fn value_text(v: &toml::Value) -> Result<String, String> {
    Ok(match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(x) => x.to_string(),
        toml::Value::Boolean(_) => {
            return Err("a switch value (true/false) where this setting takes a value".into());
        }
        toml::Value::Array(a) => {
            let parts: Result<Vec<String>, String> = a.iter().map(value_text).collect();
            parts?.join(",")
        }
        toml::Value::Datetime(d) => d.to_string(),
        toml::Value::Table(_) => return Err("a table where this setting takes a value".into()),
    })
}

/// The arguments of one key (`--top-k 50`, `--ablation`, or nothing for `false`).
fn key_args(cmd: &Command, key: &str, v: &toml::Value) -> Result<Vec<OsString>, String> {
    let long = flag(key);
    let Some(arg) = cmd
        .get_arguments()
        .find(|a| a.get_long() == Some(long.as_str()) && !is_builtin(a))
    else {
        let known: Vec<String> = cmd
            .get_arguments()
            .filter(|a| !is_builtin(a))
            .filter_map(|a| a.get_long().map(|l| l.replace('-', "_")))
            .collect();
        return Err(format!("unknown key (known keys: {})", known.join(", ")));
    };
    if matches!(arg.get_action(), ArgAction::SetTrue) {
        return match v {
            toml::Value::Boolean(true) => Ok(vec![format!("--{long}").into()]),
            toml::Value::Boolean(false) => Ok(vec![]),
            _ => Err("a switch: write true or false".into()),
        };
    }
    let text = value_text(v)?;
    Ok(vec![format!("--{long}").into(), text.into()])
}

pub(crate) fn is_builtin(a: &clap::Arg) -> bool {
    matches!(a.get_id().as_str(), "help" | "version")
}

impl Settings {
    /// `--config PATH`, else `./recsys.toml` when it exists, else no file.
    pub fn load(path: Option<&Path>) -> Result<Settings> {
        match path {
            Some(p) => Self::read(p),
            None if Path::new(DEFAULT_FILE).is_file() => Self::read(Path::new(DEFAULT_FILE)),
            None => Ok(Settings::default()),
        }
    }

    /// Reads and checks a settings file: an unknown section or key, or a value its flag does not
    /// accept, is an error naming the file, line and key.
    pub fn read(path: &Path) -> Result<Settings> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the settings file {}", path.display()))?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Settings> {
        let file = path.display();
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| anyhow::anyhow!("{file}: not valid TOML: {e}"))?;
        let sections = sections();
        let mut out = Settings {
            path: Some(path.to_path_buf()),
            ..Default::default()
        };
        let at = |section: Option<&str>, key: &str| {
            line_of(text, section, key).map_or(String::new(), |l| format!(" line {l}"))
        };
        for (key, value) in &table {
            if let toml::Value::Table(keys) = value {
                let Some(sec) = sections.iter().find(|s| s.name == key) else {
                    let names: Vec<&str> = sections.iter().map(|s| s.name).collect();
                    let line =
                        section_line(text, key).map_or(String::new(), |l| format!(" line {l}"));
                    bail!(
                        "{file}{line}: unknown section [{key}] (sections: {})",
                        names.join(", ")
                    );
                };
                let cmd = (sec.args)();
                let mut args = Vec::new();
                for (k, v) in keys {
                    let where_ = at(Some(key), k);
                    let a = key_args(&cmd, k, v)
                        .map_err(|e| anyhow::anyhow!("{file}{where_}: `{key}.{k}`: {e}"))?;
                    // Each key alone through the command's own parser: its type and range.
                    if let Err(e) = cmd.clone().try_get_matches_from(&a) {
                        bail!("{file}{where_}: `{key}.{k}` = {v}: {}", clap_message(&e));
                    }
                    args.extend(a);
                }
                // Then all of them together (conflicts between keys).
                if let Err(e) = cmd.clone().try_get_matches_from(&args) {
                    let line =
                        section_line(text, key).map_or(String::new(), |l| format!(" line {l}"));
                    bail!("{file}{line}: [{key}]: {}", clap_message(&e));
                }
                out.sections.insert(key.clone(), args);
            } else {
                let where_ = at(None, key);
                if !GLOBAL_KEYS.contains(&key.as_str()) {
                    bail!(
                        "{file}{where_}: unknown top-level key `{key}` (top-level keys: {}; \
                         stage settings go in a [section])",
                        GLOBAL_KEYS.join(", ")
                    );
                }
                let text = match value {
                    toml::Value::String(_) | toml::Value::Integer(_) => value_text(value),
                    _ => Err(String::new()),
                }
                .map_err(|_| {
                    anyhow::anyhow!(
                        "{file}{where_}: `{key}` = {value}: expected a string or an integer"
                    )
                })?;
                if key == "seed" && text.parse::<u64>().is_err() {
                    bail!("{file}{where_}: `seed` = {value}: expected a non-negative integer");
                }
                out.globals.push(format!("--{}", flag(key)).into());
                out.globals.push(text.into());
            }
        }
        Ok(out)
    }

    /// The flags of a section from the file (empty when the file has none).
    pub fn args(&self, section: &str) -> &[OsString] {
        self.sections.get(section).map_or(&[], Vec::as_slice)
    }

    /// A stage's effective config: the section's flags, then `forced` (the pipeline's own, which
    /// win), parsed by the config's clap definition.
    pub fn config<T: clap::Args + clap::FromArgMatches>(
        &self,
        section: &str,
        forced: &[&str],
    ) -> Result<T> {
        let mut args: Vec<OsString> = self.args(section).to_vec();
        args.extend(forced.iter().map(OsString::from));
        let m = overriding(cmd::<T>("x"))
            .try_get_matches_from(&args)
            .map_err(|e| anyhow::anyhow!("[{section}]: {}", clap_message(&e)))?;
        T::from_arg_matches(&m).map_err(|e| anyhow::anyhow!("[{section}]: {}", clap_message(&e)))
    }

    /// `argv` with the file's settings spliced in: the globals right after the program name,
    /// the subcommand's section right after the subcommand, so that flags given on the command
    /// line come later and win (`root` must let arguments override themselves).
    pub fn splice(&self, root: &Command, argv: Vec<OsString>) -> Vec<OsString> {
        let path = subcommand_path(root, &argv);
        let mut out: Vec<OsString> = Vec::with_capacity(argv.len() + 16);
        let section = section_of(&path).map(|s| s.name);
        let mut rest = argv.into_iter();
        out.extend(rest.next());
        out.extend(self.globals.iter().cloned());
        let mut want = path.iter().peekable();
        for a in rest.by_ref() {
            let matched = want.peek().is_some_and(|w| a.to_str() == Some(w.as_str()));
            out.push(a);
            if matched {
                want.next();
                if want.peek().is_none() {
                    if let Some(s) = section {
                        out.extend(self.args(s).iter().cloned());
                    }
                    break;
                }
            }
        }
        out.extend(rest);
        out
    }
}

/// Lets every argument of `cmd` and of its subcommands override itself (the file's value first,
/// the command line's after it).
pub fn overriding(cmd: Command) -> Command {
    let subs: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    let mut cmd = cmd.args_override_self(true);
    for s in subs {
        cmd = cmd.mut_subcommand(s, overriding);
    }
    cmd
}

/// The subcommand names of `argv` (`["train", "retriever"]`), from a lenient parse.
pub fn subcommand_path(root: &Command, argv: &[OsString]) -> Vec<String> {
    let m = root.clone().ignore_errors(true).try_get_matches_from(argv);
    let mut path = Vec::new();
    let Ok(mut m) = m else { return path };
    while let Some((name, sub)) = m.subcommand() {
        path.push(name.to_string());
        m = sub.clone();
    }
    path
}

/// clap's error text without its "error: " prefix and usage footer.
fn clap_message(e: &clap::Error) -> String {
    let s = e.render().to_string();
    let first = s
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim_start_matches("error: ");
    first.replace("--", "").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Settings> {
        Settings::parse(text, Path::new("recsys.toml"))
    }

    #[test]
    fn a_setting_reaches_its_stage_and_the_command_line_wins() {
        let s = parse("seed = 7\n[retrieve]\ntop_k = 50\nann = true\nsplit = \"valid\"\n").unwrap();
        let r: crate::retrieve::RetrieveConfig = s.config("retrieve", &[]).unwrap();
        assert_eq!((r.top_k, r.ann, r.split), (50, true, crate::Split::Valid));
        let r: crate::retrieve::RetrieveConfig = s.config("retrieve", &["--top-k", "20"]).unwrap();
        assert_eq!(r.top_k, 20);
        let argv: Vec<OsString> = ["recsys", "--quiet", "retrieve", "--top-k", "9"]
            .iter()
            .map(OsString::from)
            .collect();
        let root = Command::new("recsys")
            .arg(
                clap::Arg::new("quiet")
                    .long("quiet")
                    .action(ArgAction::SetTrue),
            )
            .subcommand(cmd::<crate::retrieve::RetrieveConfig>("retrieve"));
        let spliced = s.splice(&root, argv);
        let words: Vec<&str> = spliced.iter().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(
            words,
            [
                "recsys", "--seed", "7", "--quiet", "retrieve", "--top-k", "50", "--ann",
                "--split", "valid", "--top-k", "9"
            ]
        );
    }

    #[test]
    fn bad_files_name_the_line_and_key() {
        let e = parse("[retrieve]\ntop_k = 5\n\n[train_ranker]\nnum_round = 3\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("line 5")
                && e.contains("train_ranker.num_round")
                && e.contains("unknown key"),
            "{e}"
        );
        assert!(e.contains("num_rounds"), "{e}");
        let e = parse("[retrieve]\n\ntop_k = \"many\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 3") && e.contains("retrieve.top_k"), "{e}");
        let e = parse("[retrieve]\ntop_k = true\n").unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("switch"), "{e}");
        let e = parse("[retrieve]\nann = 3\n").unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("true or false"), "{e}");
        let e = parse("[retreive]\ntop_k = 3\n").unwrap_err().to_string();
        assert!(
            e.contains("line 1") && e.contains("unknown section [retreive]"),
            "{e}"
        );
        let e = parse("top_k = 3\n").unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("top-level"), "{e}");
        let e = parse("[retrieve]\nsplit = \"tset\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2") && e.contains("tset"), "{e}");
        let e = parse("[split]\ntrain_end = 5\nquantiles = [0.8, 0.9]\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("[split]") && e.contains("cannot be used with"),
            "{e}"
        );
        let e = parse("[retrieve\n").unwrap_err().to_string();
        assert!(e.contains("not valid TOML"), "{e}");
    }
}
