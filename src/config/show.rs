//! `recsys config show` (the effective settings, each marked when at its default) and
//! `recsys config init` (a file with every key commented out at its default).

use std::fmt::Write as _;

use clap::ArgAction;

use super::{Settings, is_builtin, overriding, sections};

/// A flag's value as it would be written in the file.
fn toml_value(arg: &clap::Arg, raw: &[String]) -> String {
    let one = |v: &str| {
        if v.parse::<i64>().is_ok()
            || (v.parse::<f64>().is_ok()
                && v.chars().all(|c| c.is_ascii_digit() || ".-+e".contains(c)))
        {
            v.to_string()
        } else {
            format!("{v:?}")
        }
    };
    if matches!(arg.get_action(), ArgAction::SetTrue) {
        return raw.first().cloned().unwrap_or_else(|| "false".into());
    }
    let delimited = arg.get_value_delimiter().is_some();
    if delimited || matches!(arg.get_action(), ArgAction::Append) {
        let items: Vec<String> = raw.iter().map(|v| one(v)).collect();
        return format!("[{}]", items.join(", "));
    }
    raw.first().map_or_else(String::new, |v| one(v))
}

/// The settings of every section: the file's value or the default, each marked.
pub fn show(settings: &Settings, globals: &[(&str, String)]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# effective settings ({}); `# default` marks values no file set",
        settings
            .path
            .as_ref()
            .map_or("no settings file".to_string(), |p| format!(
                "from {}",
                p.display()
            ))
    );
    for (k, v) in globals {
        let v = if v.parse::<u64>().is_ok() {
            v.clone()
        } else {
            format!("{v:?}")
        };
        let _ = writeln!(out, "{k} = {v}");
    }
    for sec in sections() {
        let cmd = overriding((sec.args)());
        let m = cmd
            .clone()
            .try_get_matches_from(settings.args(sec.name))
            .expect("checked when the file was read");
        let _ = writeln!(out, "\n[{}]  # {}", sec.name, sec.about);
        for arg in cmd.get_arguments().filter(|a| !is_builtin(a)) {
            let Some(long) = arg.get_long() else { continue };
            let id = arg.get_id().as_str();
            let raw: Vec<String> = m
                .get_raw(id)
                .map(|vs| vs.map(|v| v.to_string_lossy().into_owned()).collect())
                .unwrap_or_default();
            let key = long.replace('-', "_");
            let from_file = m.value_source(id) == Some(clap::parser::ValueSource::CommandLine);
            let mark = if from_file { "" } else { "  # default" };
            if key.contains("api_key") && !raw.is_empty() {
                let _ = writeln!(out, "{key} = \"***\"{mark}");
            } else if raw.is_empty() && !matches!(arg.get_action(), ArgAction::SetTrue) {
                let _ = writeln!(out, "# {key} =  (not set)");
            } else {
                let _ = writeln!(out, "{key} = {}{mark}", toml_value(arg, &raw));
            }
        }
    }
    out
}

/// A settings file with every key commented out at its default, each under its help text.
pub fn template() -> String {
    let mut out = String::from(
        "# recsys settings: one [section] per stage; a key is the stage's command-line flag with\n\
         # `_` for `-` (see `recsys <command> --help`), and a flag given on the command line wins.\n\
         # Every key below is at its default: uncomment and edit what you want to change.\n\
         # Paths are relative to the working directory.\n\n\
         # data_dir = \"data\"\n# category = \"All_Beauty\"\n# seed = 42\n",
    );
    for sec in sections() {
        let cmd = (sec.args)();
        let m = cmd
            .clone()
            .try_get_matches_from(std::iter::empty::<&str>())
            .expect("defaults parse");
        let _ = writeln!(out, "\n# {}\n[{}]", sec.about, sec.name);
        for arg in cmd
            .get_arguments()
            .filter(|a| !is_builtin(a) && !a.is_hide_set())
        {
            let Some(long) = arg.get_long() else { continue };
            let key = long.replace('-', "_");
            if let Some(help) = arg.get_help() {
                for l in help.to_string().lines() {
                    let _ = writeln!(out, "# {l}");
                }
            }
            let mut values: Vec<String> = arg
                .get_possible_values()
                .iter()
                .map(|v| v.get_name().to_string())
                .collect();
            if matches!(arg.get_action(), ArgAction::SetTrue) {
                values.clear();
            }
            if !values.is_empty() {
                let _ = writeln!(out, "#   one of: {}", values.join(", "));
            }
            let raw: Vec<String> = m
                .get_raw(arg.get_id().as_str())
                .map(|vs| vs.map(|v| v.to_string_lossy().into_owned()).collect())
                .unwrap_or_default();
            if raw.is_empty() && !matches!(arg.get_action(), ArgAction::SetTrue) {
                let _ = writeln!(out, "# {key} =");
            } else {
                let _ = writeln!(out, "# {key} = {}", toml_value(arg, &raw));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// Every key of the template, uncommented, gives each stage exactly its default config: the
    /// file's names and defaults are the flags' own.
    #[test]
    fn the_template_uncommented_is_the_defaults() {
        let text: String = template()
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(kv) if kv.contains(" = ") && !kv.starts_with(' ') => kv.to_string(),
                _ => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n");
        let s = Settings::parse(&text, Path::new("recsys.toml")).unwrap();
        assert!(s.sections.get("retrieve").is_some_and(|a| a.len() > 10));
        macro_rules! same {
            ($name:literal, $t:ty) => {
                let from_file: $t = s.config($name, &[]).unwrap();
                assert_eq!(
                    format!("{from_file:?}"),
                    format!("{:?}", <$t>::default()),
                    "[{}]",
                    $name
                );
            };
        }
        same!("retrieve", crate::retrieve::RetrieveConfig);
        same!("train_retriever", crate::train::retriever::RetrieverConfig);
        same!("train_ranker", crate::rank::RankerConfig);
        same!("split", crate::etl::split::SplitConfig);
        same!("keywords", crate::etl::keywords::KeywordsConfig);
        same!("index", crate::index::IndexBuildConfig);
        same!("pipeline", crate::pipeline::stages::PipelineConfig);
    }
}
