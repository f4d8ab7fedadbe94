//! `fit`: from a recipe (or a MovieLens folder) to a model ready to serve, in one call. The
//! protocol's data with test users held out; a training configuration derived from the data
//! ([`derive`]), which a recipe's `[train]` table or a `--config` file may change; training
//! that keeps a wall-clock budget and the best validation epoch; export; and a report of the
//! model against popularity and tuned co-occurrence on the held-out users, paired, on the
//! protocol's candidates and on the whole catalog. It never hands over a model that loses to
//! counting as if it won: the report says which is better and what to try.

pub mod derive;
pub mod prior;
pub mod report;
pub mod shape;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use candle_core::quantized::GgmlDType;
use kvrec_core::options::Mode;

use crate::baselines::{tuned_cooccurrence, CoOccurrenceScorer, PopularityScorer, Scorer};
use crate::catalog_eval::{self, Eligible};
use crate::dataset::{self, Extras};
use crate::interactions::Interactions;
use crate::protocol::{Instance, ProtocolConfig, Sequence};
use crate::train::item_features::keys::ITEM_KEYS_FILE;
use crate::train::item_features::vectors::{self as item_vectors, ITEM_VECTORS_FILE};
use crate::train::{self, checkpoint, Corpus, Limits, TrainConfig};
use crate::{eval, io, movielens, paired, recipe};
use shape::DataShape;

/// The files a fit writes into its folder.
pub const MODEL_FILE: &str = "model.gguf";
pub const REPORT_FILE: &str = "report.md";
pub const CONFIG_FILE: &str = "train.toml";
const DATA_DIR: &str = "data";
const RUN_DIR: &str = "run";

/// Core-seconds Gemma 3 270M takes per item text: ML-1M's 3,883 titles in 5 min on 2 cores,
/// ML-100K's 1,682 in 5.5 min on one thread beside another fit.
const TEXT_CORE_SECONDS_PER_ITEM: f64 = 0.16;

/// The time left after training for export and for scoring the model on `requests` held-out
/// requests (about 3 ms each on 2 cores, twice: the candidates and the whole catalog), with a
/// margin that grows with the budget.
fn reserve(budget: Duration, requests: usize) -> Duration {
    Duration::from_secs_f64(3.0 + 0.006 * requests as f64 + 0.03 * budget.as_secs_f64())
}

/// Where the interactions come from.
#[derive(Debug, Clone)]
pub enum Source {
    Recipe(PathBuf),
    MovieLens(PathBuf),
}

/// Which language model reads the item titles into vectors.
#[derive(Debug, Clone)]
pub enum ItemText {
    /// The one at hand, if any: `KVREC_GEMMA_GGUF`, else `scripts/fetch_gemma.sh`'s cache.
    Auto,
    Off,
    Model(PathBuf),
}

#[derive(Debug, Clone)]
pub struct FitOptions {
    pub source: Source,
    pub out: PathBuf,
    /// Wall-clock time for the whole fit, data to report.
    pub budget: Duration,
    /// Continue an interrupted fit in `out`.
    pub resume: bool,
    /// A TOML file of training options set over the derived ones.
    pub config: Option<PathBuf>,
    pub protocol: ProtocolConfig,
    pub item_text: ItemText,
    pub threads: Option<u32>,
    pub progress: bool,
}

/// What a fit hands over.
#[derive(Debug)]
pub struct Fitted {
    pub model: PathBuf,
    pub report: PathBuf,
    pub verdict: report::Verdict,
    /// What the console prints: the verdict, the figures and the SQL that serves the model.
    pub summary: String,
}

/// Runs a fit; see the module documentation.
pub fn run(options: &FitOptions) -> Result<Fitted> {
    let started = Instant::now();
    let out = &options.out;
    let say = |line: String| {
        if options.progress {
            eprintln!("{line}");
        }
    };
    if !options.resume && (out.join(RUN_DIR).exists() || out.join(MODEL_FILE).exists()) {
        bail!(
            "{} holds an earlier fit; pass --resume to continue it, or give another --out",
            out.display()
        );
    }
    // 1. Data, with the protocol's test users held out. The source is read before anything
    // is written, so a bad recipe leaves no folder behind.
    let (interactions, recipe_train, recipe_dir) = read_source(&options.source)?;
    // The training options given are checked before the data is written, too.
    if let Some(table) = &recipe_train {
        TrainConfig::default().overlay_toml(table, &recipe_dir, "the recipe's [train] table")?;
    }
    if let Some(file) = &options.config {
        TrainConfig::default().overlay_file(file)?;
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let data_dir = out.join(DATA_DIR);
    let reuse =
        options.resume && dataset::written_config(&data_dir)?.as_ref() == Some(&options.protocol);
    let mut notes: Vec<String> = Vec::new();
    if !reuse {
        let text_model = item_text_model(&interactions, options, &mut notes);
        let extras = Extras {
            item_text_model: text_model,
            threads: options.threads,
            ..Extras::default()
        };
        let source = match &options.source {
            Source::Recipe(path) | Source::MovieLens(path) => path,
        };
        dataset::write(&interactions, &options.protocol, &extras, source, &data_dir)?;
    }
    notes.iter().for_each(|n| say(format!("fit: {n}")));
    let sequences: Vec<Sequence> = io::read_jsonl(&data_dir.join(dataset::SEQUENCES))?;
    let valid: Vec<Instance> = io::read_jsonl(&data_dir.join(dataset::TRAIN))?;
    let test: Vec<Instance> = io::read_jsonl(&data_dir.join(dataset::TEST))?;
    say(format!(
        "fit: data ready in {:.0} s: {} users, {} held out for the report",
        started.elapsed().as_secs_f64(),
        sequences.len(),
        test.len()
    ));

    // 2. The configuration: derived from the data, then the recipe's and the file's options.
    let shape = DataShape::of(
        &sequences,
        &ids_in(&data_dir.join(ITEM_KEYS_FILE))?,
        &ids_in(&data_dir.join(ITEM_VECTORS_FILE))?,
    );
    let config = configure(
        &shape,
        &data_dir,
        recipe_train.as_ref(),
        &recipe_dir,
        options,
    )?;
    io::write_atomically(
        &out.join(CONFIG_FILE),
        format!(
            "# The training configuration fit derived from the data (see docs), with the\n\
             # recipe's [train] table and --config set over it. Edit it and pass it back:\n\
             #   kvrec-finetune fit ... --config {CONFIG_FILE}   or   kvrec-finetune train --config {CONFIG_FILE} --out run\n{}",
            config.to_toml()?
        )
        .as_bytes(),
    )?;

    // 3. The baselines first: they need no model, and what they cost tells how long scoring
    // the model will take, which the training deadline leaves room for.
    let scoring = Instant::now();
    let held_out = train::sequence::hold_out_last(&sequences, &valid)?;
    let cooccurrence = tuned_cooccurrence(&held_out, &valid)?;
    let popularity = PopularityScorer::new(&sequences);
    let co_occurrence = CoOccurrenceScorer::new(&sequences, cooccurrence);
    let scorers: [&dyn Scorer; 2] = [&popularity, &co_occurrence];
    let mut rows = scorers
        .iter()
        .map(|&s| eval::evaluate(s, &test))
        .collect::<Result<Vec<_>>>()?;
    let eligible = Eligible::new(&sequences);
    let mut catalog = scorers
        .iter()
        .map(|&s| catalog_eval::evaluate(s, &test, &eligible))
        .collect::<Result<Vec<_>>>()?;
    let baselines = scoring.elapsed();
    say(format!(
        "fit: popularity and co-occurrence (tuned on validation) scored in {:.0} s",
        baselines.as_secs_f64()
    ));

    // 4. Training within the budget, less the time export and scoring the model will take.
    let run_dir = out.join(RUN_DIR);
    let deadline = started
        + options.budget.saturating_sub(reserve(
            options.budget,
            // Validation requests are scored once, held-out ones twice.
            test.len() + config.valid_users.min(valid.len()) / 2,
        ));
    if Instant::now() >= deadline {
        bail!(
            "the budget ({}) ran out before training began (data and baselines took {:.0} s); \
             give a larger --budget",
            humanize(options.budget),
            started.elapsed().as_secs_f64()
        );
    }
    train::carry_item_ids(&config.data, &run_dir)?;
    let resume = options.resume && checkpoint::latest(&run_dir)?.is_some();
    let corpus = Corpus::Sequences {
        sequences: &sequences,
        valid: &valid,
    };
    let limits = Limits {
        steps: None,
        deadline: Some(deadline),
    };
    let summary = train::run_within(&config, corpus, &run_dir, resume, limits, options.progress)?;

    // 5. Export, aside and renamed: a fit never leaves a half-written model. The model alone
    // on the validation requests sets the weight of its co-watch prior; then the model as it
    // serves on the same held-out requests as the baselines.
    let prior_path = run_dir.join(train::export::PRIOR_FILE);
    if prior_path.exists() {
        std::fs::remove_file(&prior_path)
            .with_context(|| format!("removing {}", prior_path.display()))?;
    }
    let model_path = out.join(MODEL_FILE);
    let name = model_name(out);
    let load = kvrec_core::options::Options {
        n_threads: options.threads,
        ..Default::default()
    };
    let scoring = Instant::now();
    let mut model = export_and_load(&run_dir, &model_path, &name, &load)?;
    let sample = train::sequence::validation_sample(&valid, config.valid_users);
    let prior_choice = prior::choose(&model, &sample, &held_out, cooccurrence)?;
    if prior_choice.weight > 0.0 {
        let chosen =
            co_occurrence
                .table()
                .prior(cooccurrence, prior_choice.weight, prior::NEIGHBOURS);
        io::write_atomically(&prior_path, chosen.to_json().as_bytes())?;
        drop(model);
        model = export_and_load(&run_dir, &model_path, &name, &load)?;
    }
    say(format!(
        "fit: co-watch prior weight {}; validation HR@1 by weight: {}",
        prior_choice.weight,
        prior_choice
            .hr1
            .iter()
            .map(|(w, h)| format!("{w} {h:.4}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    rows.push(eval::evaluate_model(&model, &test, Mode::Score)?);
    catalog.push(catalog_eval::evaluate_model(&model, &test, &eligible)?);
    let against = paired::compare(&rows[2].outcomes, &rows[1].outcomes, options.protocol.seed);
    say(format!(
        "fit: the model scored in {:.0} s",
        scoring.elapsed().as_secs_f64()
    ));

    // 6. The report.
    let validation = read_validation(&run_dir)?;
    let verdict = report::Verdict::of(&against);
    let facts = report::Facts {
        source: &options.source,
        shape: &shape,
        config: &config,
        summary: &summary,
        validation: &validation,
        prior: &prior_choice,
        rows: &rows,
        catalog: &catalog,
        against: &against,
        verdict,
        notes: &notes,
        model: &model_path,
        name: &name,
        seconds: started.elapsed().as_secs_f64(),
        budget: options.budget,
        seed: options.protocol.seed,
    };
    let report_path = out.join(REPORT_FILE);
    report::write(&facts, out, &report_path)?;
    let summary = report::console(&facts);
    Ok(Fitted {
        model: model_path.clone(),
        report: report_path,
        verdict,
        summary,
    })
}

/// Exports the run's best checkpoint to `model_path` (written aside, then renamed) and loads it.
fn export_and_load(
    run_dir: &Path,
    model_path: &Path,
    name: &str,
    load: &kvrec_core::options::Options,
) -> Result<kvrec_llm::Model> {
    let partial = model_path.with_extension("gguf.partial");
    train::export::export(run_dir, &partial, GgmlDType::F16, name)?;
    std::fs::rename(&partial, model_path)?;
    let path = model_path.to_str().context("the model path is not UTF-8")?;
    Ok(kvrec_llm::Model::load(name, path, load)?)
}

/// The interactions, and a recipe's `[train]` table with the folder its paths are relative to.
fn read_source(source: &Source) -> Result<(Interactions, Option<toml::Table>, PathBuf)> {
    Ok(match source {
        Source::Recipe(path) => {
            let parsed = recipe::Recipe::read(path)?;
            let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
            let interactions = recipe::load(&parsed, &parsed.open(&dir)?)?;
            (interactions, parsed.train, dir)
        }
        Source::MovieLens(dir) => (
            Interactions::from(&movielens::read(dir)?),
            None,
            PathBuf::from("."),
        ),
    })
}

/// The text model to read the item titles with, if the items have any, one is at hand and
/// reading them fits a quarter of the budget; `notes` says why not otherwise.
fn item_text_model(
    interactions: &Interactions,
    options: &FitOptions,
    notes: &mut Vec<String>,
) -> Option<PathBuf> {
    let texts = interactions
        .items
        .values()
        .filter(|item| item_vectors::item_text(item).is_some())
        .count();
    if texts == 0 {
        return None;
    }
    let model = match &options.item_text {
        ItemText::Off => return None,
        ItemText::Model(path) => path.clone(),
        ItemText::Auto => match text_model_at_hand() {
            Some(path) => path,
            None => {
                notes.push(format!(
                    "{texts} items have a title or category, but no text model is at hand to read \
                     them; `bash scripts/fetch_gemma.sh` fetches Gemma 3 270M (or pass \
                     --item-text-model FILE). Training goes on without title vectors."
                ));
                return None;
            }
        },
    };
    let threads = options
        .threads
        .unwrap_or_else(kvrec_llm::limits::cores)
        .max(1);
    let seconds = texts as f64 * TEXT_CORE_SECONDS_PER_ITEM / f64::from(threads);
    if matches!(options.item_text, ItemText::Auto) && seconds > options.budget.as_secs_f64() / 4.0 {
        notes.push(format!(
            "reading {texts} item titles on {threads} thread(s) would take about {} of the {} \
             budget; training goes on without title vectors (a larger --budget, more --threads, \
             or --item-text-model to insist)",
            humanize(Duration::from_secs_f64(seconds)),
            humanize(options.budget)
        ));
        return None;
    }
    notes.push(format!(
        "{} reads the {texts} item titles into vectors",
        model.display()
    ));
    Some(model)
}

/// `KVREC_GEMMA_GGUF`, else where `scripts/fetch_gemma.sh` caches Gemma 3 270M, if present.
pub fn text_model_at_hand() -> Option<PathBuf> {
    let path = match std::env::var_os("KVREC_GEMMA_GGUF") {
        Some(path) => PathBuf::from(path),
        None => {
            PathBuf::from(std::env::var_os("HOME")?).join(".cache/kvrec/gemma-3-270m-q4_k_m.gguf")
        }
    };
    path.is_file().then_some(path)
}

/// The derived configuration with the data's paths, then the recipe's `[train]` table and the
/// `--config` file set over it.
fn configure(
    shape: &DataShape,
    data_dir: &Path,
    recipe_train: Option<&toml::Table>,
    recipe_dir: &Path,
    options: &FitOptions,
) -> Result<TrainConfig> {
    let mut config = derive::derive(shape);
    config.seed = options.protocol.seed;
    config.data = vec![data_dir.join(dataset::SEQUENCES)];
    config.valid = Some(data_dir.join(dataset::TRAIN));
    config.item_keys = (shape.items_with_keys > 0).then(|| data_dir.join(ITEM_KEYS_FILE));
    config.item_vectors = (shape.items_with_vectors > 0).then(|| data_dir.join(ITEM_VECTORS_FILE));
    if let Some(table) = recipe_train {
        config = config.overlay_toml(table, recipe_dir, "the recipe's [train] table")?;
    }
    if let Some(file) = &options.config {
        config = config.overlay_file(file)?;
    }
    if config.number_tokens < shape.max_item_id as usize {
        bail!(
            "number_tokens = {} leaves items without a token: the largest item id is {}; remove \
             the option to let fit set it",
            config.number_tokens,
            shape.max_item_id
        );
    }
    config.check()?;
    Ok(config)
}

/// The `id` of each line of a JSONL file (none when it is not there).
fn ids_in(path: &Path) -> Result<Vec<i64>> {
    #[derive(serde::Deserialize)]
    struct Id {
        id: i64,
    }
    if !path.exists() {
        return Ok(Vec::new());
    }
    Ok(io::read_jsonl::<Id>(path)?
        .into_iter()
        .map(|x| x.id)
        .collect())
}

/// Validation HR@1 per epoch, from the run's `valid.csv`.
fn read_validation(run: &Path) -> Result<Vec<(usize, f64)>> {
    let path = run.join("valid.csv");
    if !path.exists() {
        return Ok(Vec::new());
    }
    Ok(std::fs::read_to_string(&path)?
        .lines()
        .skip(1)
        .filter_map(checkpoint::epoch_hr1)
        .collect())
}

/// The model's name: the fit folder's (what `kvrec_models()` lists).
fn model_name(out: &Path) -> String {
    out.canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "fitted".into())
}

/// A duration as people write it: `45s`, `12m`, `1h30m`.
pub fn humanize(duration: Duration) -> String {
    let seconds = duration.as_secs();
    match (seconds / 3600, seconds % 3600 / 60, seconds % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, 0, _) => format!("{h}h"),
        (h, m, _) => format!("{h}h{m}m"),
    }
}

/// Parses a budget: `90s`, `30m`, `2h`, `1h30m` (a bare number is minutes).
pub fn parse_budget(text: &str) -> Result<Duration> {
    let text = text.trim();
    if let Ok(minutes) = text.parse::<f64>() {
        return positive(minutes * 60.0, text);
    }
    let (mut seconds, mut number) = (0.0, String::new());
    for c in text.chars() {
        match c {
            '0'..='9' | '.' => number.push(c),
            'h' | 'm' | 's' if !number.is_empty() => {
                let value: f64 = number
                    .parse()
                    .with_context(|| format!("budget '{text}': '{number}' is not a number"))?;
                seconds += value
                    * match c {
                        'h' => 3600.0,
                        'm' => 60.0,
                        _ => 1.0,
                    };
                number.clear();
            }
            _ => bail!("budget '{text}' is not a duration; write it like 90s, 30m, 2h or 1h30m"),
        }
    }
    if !number.is_empty() {
        bail!("budget '{text}' ends in a number without a unit; write it like 90s, 30m or 1h30m");
    }
    positive(seconds, text)
}

fn positive(seconds: f64, text: &str) -> Result<Duration> {
    if !(seconds.is_finite() && seconds >= 1.0) {
        bail!("budget '{text}' is less than a second; give one like 30m");
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_parse_as_people_write_them() {
        let cases = [
            ("90s", 90),
            ("30m", 1800),
            ("2h", 7200),
            ("1h30m", 5400),
            ("45", 2700),
        ];
        for (text, seconds) in cases {
            assert_eq!(parse_budget(text).unwrap().as_secs(), seconds, "{text}");
        }
        for bad in ["", "0s", "ten minutes", "5x", "1h30"] {
            let error = parse_budget(bad).unwrap_err().to_string();
            assert!(error.contains("budget"), "{bad}: {error}");
        }
        assert_eq!(humanize(Duration::from_secs(5400)), "1h30m");
        assert_eq!(humanize(Duration::from_secs(90)), "1m30s");
    }
}
