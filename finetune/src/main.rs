use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use kvrec_core::options::Mode;
use serde_json::json;

use candle_core::quantized::GgmlDType;
use kvrec_core::template::{CandidateIdPosition, TemplateSpec};
use kvrec_finetune::baselines::{CoOccurrenceScorer, PopularityScorer, RandomScorer, Scorer};
use kvrec_finetune::catalog_eval;
use kvrec_finetune::cowatch::CoWatchParams;
use kvrec_finetune::interactions::Interactions;
use kvrec_finetune::protocol::{ProtocolConfig, Sequence, CANDIDATE_KEYS};
use kvrec_finetune::train::{self, lora::LoraSpec, TrainConfig};
use kvrec_finetune::training_data::TrainingRow;
use kvrec_finetune::{bench, db, eval, io, movielens, protocol, recipe, training_data};

/// How `eval` has a model rank: clap parses it, so a misspelt mode lists the choices.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum RankMode {
    /// Every candidate scored (Error Rate 0).
    Score,
    /// Greedy generation, parsed (the paper's way).
    Generate,
}

impl RankMode {
    fn mode(self) -> Mode {
        match self {
            RankMode::Score => Mode::Score,
            RankMode::Generate => Mode::Generate,
        }
    }
}

/// kvrec's data, training and evaluation tool.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Import a MovieLens folder (ML-1M or ML-100K layout) into a SQLite database.
    Import {
        /// The unpacked MovieLens folder, e.g. ../shared/data/movielens/ml-100k
        #[arg(long)]
        from: PathBuf,
        /// The SQLite file to create or update.
        #[arg(long)]
        db: PathBuf,
    },
    /// Build the paper's train and test requests (JSONL) and augmented training data.
    Data {
        /// The unpacked MovieLens folder.
        #[arg(long, required_unless_present = "recipe", conflicts_with = "recipe")]
        from: Option<PathBuf>,
        /// A recipe (TOML) with SQL queries over your own SQLite/DuckDB database or CSV
        /// files: interactions (user, item, time [, rating]), and optionally item and user
        /// keys. Your ids may be text or any integers; the model answers with them.
        #[arg(long)]
        recipe: Option<PathBuf>,
        /// Output folder: train.jsonl, test.jsonl, train_sequences.jsonl, train-<variant>.jsonl, manifest.json
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        #[arg(long, default_value_t = 20)]
        history: usize,
        #[arg(long, default_value_t = 10)]
        candidates: usize,
        #[arg(long, default_value_t = 1000)]
        test_users: usize,
        #[arg(long, default_value_t = 5)]
        min_interactions: usize,
        /// Augmentation variants to write (none, SC, SO, M1, M2, M3, or combinations like SC+SO).
        #[arg(long, value_delimiter = ',', default_value = "none,SO")]
        variants: Vec<String>,
        /// Enhanced copies per original (the paper's 1:4).
        #[arg(long, default_value_t = 4)]
        copies: usize,
        /// Extra candidate keys: genres, year, popularity, co_watch, co_watch_rank.
        #[arg(long, value_delimiter = ',')]
        candidate_keys: Vec<String>,
        /// Training requests per user (targets at the second-to-last item and before it).
        #[arg(long, default_value_t = 1)]
        train_targets: usize,
        /// Also write the train and test requests into this SQLite file's `requests` table.
        #[arg(long)]
        sqlite: Option<PathBuf>,
        /// Order of ratings within the same second: movie-id (SASRec's rule) or file (the
        /// ratings file's order, which carries no id cue).
        #[arg(long, default_value = "movie-id")]
        tie_order: protocol::TieOrder,
    },
    /// Train a llama-architecture model from scratch on training rows (candle, CPU).
    Train {
        /// Training rows: one or more train-<variant>.jsonl from `data`.
        #[arg(long, required = true, value_delimiter = ',')]
        data: Vec<PathBuf>,
        /// Run folder: tokenizer.json, checkpoint, loss.csv, run.json.
        #[arg(long)]
        out: PathBuf,
        /// Continue from the checkpoint in --out (same options required).
        #[arg(long)]
        resume: bool,
        /// Also write the GGUF here when training ends.
        #[arg(long)]
        gguf: Option<PathBuf>,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        #[arg(long, default_value_t = 8192)]
        vocab: usize,
        #[arg(long, default_value_t = 256)]
        d_model: usize,
        #[arg(long, default_value_t = 4)]
        layers: usize,
        #[arg(long, default_value_t = 4)]
        heads: usize,
        #[arg(long, default_value_t = 704)]
        ff: usize,
        #[arg(long, default_value_t = 1024)]
        context: usize,
        #[arg(long, default_value_t = 8)]
        batch: usize,
        #[arg(long, default_value_t = 1.0)]
        epochs: f64,
        #[arg(long, default_value_t = 1e-3)]
        lr: f64,
        #[arg(long, default_value_t = 50)]
        warmup: usize,
        #[arg(long, default_value_t = 200)]
        checkpoint_every: usize,
        /// Answer items that carry the loss (0 = all; 1 = the first id, what scoring reads).
        #[arg(long, default_value_t = 0)]
        loss_items: usize,
        /// Separate output head instead of the one tied to the token embedding.
        #[arg(long)]
        untied: bool,
        /// The template spec (JSON, as `kvrec_template()` prints it) the model learns and
        /// carries; default: the InstructMK template. The two options below override it.
        #[arg(long)]
        template: Option<PathBuf>,
        /// History items in the prompt (default 20, the paper's).
        #[arg(long)]
        max_history: Option<usize>,
        /// Where candidate ids go in the prompt: first (the paper's layout) or last.
        #[arg(long)]
        candidate_id: Option<String>,
        /// Make every number up to N one token (from scratch only), e.g. the largest item id:
        /// an item is then one token wherever it appears, as in a sequential recommender.
        #[arg(long, default_value_t = 0)]
        number_tokens: usize,
        /// Also train on predicting each history id from the ones before it (needs a
        /// template with `history_id_label`): next-item prediction over the whole history.
        #[arg(long)]
        history_loss: bool,
        /// Count each answer token this many times in the loss (see --history-loss).
        #[arg(long, default_value_t = 1)]
        answer_weight: usize,
        /// Start from this run's latest weights and tokenizer (same shape options).
        #[arg(long)]
        init_from: Option<PathBuf>,
        /// Stop after this many steps of this call (checkpointed; continue with --resume).
        #[arg(long)]
        stop_after: Option<usize>,
        /// Fine-tune this pre-trained llama-architecture GGUF with LoRA instead of training
        /// from scratch (the shape options are then read from the file).
        #[arg(long)]
        base: Option<PathBuf>,
        #[arg(long, default_value_t = 8)]
        lora_rank: usize,
        #[arg(long, default_value_t = 16.0)]
        lora_alpha: f64,
        /// Projections that get adapters: q, k, v, o, gate, up, down.
        #[arg(long, value_delimiter = ',', default_value = "q,v")]
        lora_targets: Vec<String>,
        /// Layers that get adapters (default: all); the top layers alone train fastest.
        #[arg(long, value_delimiter = ',')]
        lora_layers: Vec<usize>,
        /// Order the answer's items after the positive by this candidate key (ascending;
        /// -KEY for descending), e.g. co_watch_rank.
        #[arg(long)]
        order_rest_by: Option<String>,
        /// Sequence stage: --data is train_sequences.jsonl, trained as next-item prediction at
        /// every position in windows of this many items, softmax over every item (needs a
        /// template with layout "sequence" and --number-tokens ≥ the largest item id).
        #[arg(long, default_value_t = 0)]
        sequence_window: usize,
        /// Sequence stage: each target attends to only its last N items (and the BOS), exactly
        /// what a served prompt of N history items shows the model; 0 = the whole window.
        #[arg(long, default_value_t = 0)]
        attention_span: usize,
        /// Dropout on embeddings and sublayer outputs (sequence stage).
        #[arg(long, default_value_t = 0.0)]
        dropout: f64,
        /// Sequence stage: train.jsonl of the same `data` run; each user's last training item
        /// is held out and ranked every epoch, and export takes the best epoch.
        #[arg(long)]
        valid: Option<PathBuf>,
        /// Sequence stage: stop after this many epochs without a better validation HR@1.
        #[arg(long, default_value_t = 0)]
        patience: usize,
    },
    /// Write a training run's latest checkpoint as a GGUF that llama.cpp and recommend() load.
    Export {
        #[arg(long)]
        run: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// f16 (half the size), f32, or q8_0 (LoRA merges: the merged matrices).
        #[arg(long, default_value = "f16")]
        dtype: String,
        #[arg(long, default_value = "kvrec")]
        name: String,
        /// LoRA runs: also write the adapters alone as a llama.cpp LoRA GGUF here.
        #[arg(long)]
        adapter: Option<PathBuf>,
    },
    /// Benchmark recommend() through SQLite against raw llama.cpp on the same prompts.
    Bench {
        #[arg(long)]
        model: PathBuf,
        /// Requests (JSONL from `data`).
        #[arg(long)]
        test: PathBuf,
        #[arg(long, default_value_t = 100)]
        n: usize,
        /// The built extension.
        #[arg(long, default_value = "target/release/libkvrec.so")]
        extension: PathBuf,
        /// Load options (JSON), e.g. '{"n_threads": 2}'.
        #[arg(long, default_value = "{}")]
        options: String,
        /// n_batch of the contexts that score many requests per decode (rank_batch).
        #[arg(long, default_value_t = 2048)]
        batch_n_batch: u32,
        #[arg(long)]
        json: bool,
    },
    /// Write the tiny random test model (llama architecture, 0.2 M parameters) as GGUF.
    TinyModel {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 7)]
        seed: u64,
    },
    /// Score rankers on test requests: HR@1/3/5, NDCG@3/5, Error Rate, requests/s.
    Eval {
        /// Test requests (JSONL from `data`).
        #[arg(long, conflicts_with = "sqlite")]
        test: Option<PathBuf>,
        /// Or a SQLite file holding a table of requests (see --table).
        #[arg(long)]
        sqlite: Option<PathBuf>,
        /// Or a DuckDB file holding a table of requests (read with python3's duckdb package).
        #[arg(long, conflicts_with_all = ["test", "sqlite"])]
        duckdb: Option<PathBuf>,
        #[arg(long, default_value = "requests")]
        table: String,
        /// Training sequences for the popularity and co-occurrence baselines.
        #[arg(long)]
        sequences: Option<PathBuf>,
        /// Also (or only, with --baseline none) evaluate this GGUF model.
        #[arg(long)]
        model: Option<PathBuf>,
        /// How the model ranks: score (every candidate, ER 0) or generate (the paper's way).
        #[arg(long, value_delimiter = ',', default_value = "score")]
        mode: Vec<RankMode>,
        /// Evaluate only the first N requests.
        #[arg(long)]
        limit: Option<usize>,
        /// Baselines to run: random, popularity, cooccurrence, or all.
        #[arg(long, value_delimiter = ',', default_value = "all")]
        baseline: Vec<String>,
        /// Co-occurrence window in positions (default: the tuned ranker's, 10).
        #[arg(long)]
        window: Option<usize>,
        /// Co-occurrence: weight of the i-th most recent history item is decay^i (default 0.8).
        #[arg(long)]
        decay: Option<f64>,
        /// Co-occurrence: divide by (candidate popularity + 1)^normalize (default 0.5).
        #[arg(long)]
        normalize: Option<f64>,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Print JSON instead of a markdown table.
        #[arg(long)]
        json: bool,
        /// Also write the table (or JSON) to this file.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Write each request's rank of the positive per method (CSV) to this file.
        #[arg(long)]
        per_request: Option<PathBuf>,
        /// Rank the whole catalog instead of the 10 candidates: every item of --sequences the
        /// user has not trained on, the model through recommend_topk's code (HR@1/10/50,
        /// NDCG@10).
        #[arg(long, requires = "sequences")]
        catalog: bool,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Import { from, db: path } => {
            let start = Instant::now();
            let data = movielens::read(&from)?;
            let n = db::import(&path, &data)?;
            eprintln!(
                "imported {} users, {} movies, {} ratings from {} into {} in {:.1} s",
                n.users,
                n.movies,
                n.ratings,
                from.display(),
                path.display(),
                start.elapsed().as_secs_f64()
            );
        }
        Command::Data {
            from,
            recipe,
            out,
            seed,
            history,
            candidates,
            test_users,
            min_interactions,
            variants,
            copies,
            candidate_keys,
            train_targets,
            sqlite,
            tie_order,
        } => {
            if let Some(bad) = candidate_keys
                .iter()
                .find(|k| !CANDIDATE_KEYS.contains(&k.as_str()))
            {
                bail!(
                    "unknown candidate key '{bad}'; use any of {}",
                    CANDIDATE_KEYS.join(", ")
                );
            }
            let start = Instant::now();
            let config = ProtocolConfig {
                seed,
                min_interactions,
                max_history: history,
                candidates,
                test_users,
                candidate_keys,
                train_targets,
                tie_order,
            };
            let (source, interactions) = match (&from, &recipe) {
                (Some(dir), _) => (dir, Interactions::from(&movielens::read(dir)?)),
                (None, Some(path)) => (path, recipe::read(path)?),
                (None, None) => bail!("pass --from <MovieLens folder> or --recipe <recipe.toml>"),
            };
            let data = protocol::build_from(&interactions, &config);
            if data.train_sequences.is_empty() {
                bail!(
                    "no user has {min_interactions} interactions with items that have \
                     {min_interactions} too (the {min_interactions}-core filter); lower \
                     --min-interactions or add data"
                );
            }
            // Everything goes to <out>.partial first and is renamed into place at the end, so
            // an interrupted run never leaves a folder that looks complete.
            let final_out = out;
            let out = io::partial_dir(&final_out, "manifest.json")?;
            io::write_jsonl(&out.join("train.jsonl"), &data.train)?;
            io::write_jsonl(&out.join("test.jsonl"), &data.test)?;
            io::write_jsonl(&out.join("train_sequences.jsonl"), &data.train_sequences)?;
            if let Some(ids) = &interactions.item_ids {
                io::write_atomically(
                    &out.join(recipe::ITEM_IDS_FILE),
                    serde_json::to_string(ids)?.as_bytes(),
                )?;
            }
            if let Some(path) = &sqlite {
                let all: Vec<_> = data.train.iter().chain(&data.test).collect();
                db::write_requests(path, &all)?;
            }
            let mut written = json!({});
            for variant in &variants {
                let rows = training_data::rows(&data.train, variant, copies, seed)?;
                let file = format!("train-{}.jsonl", variant.replace('+', "_"));
                io::write_jsonl(&out.join(&file), &rows)?;
                written[file] = json!(rows.len());
            }
            let manifest = json!({
                "source": source.display().to_string(),
                "config": config,
                "copies": copies,
                "train": data.train.len(),
                "test": data.test.len(),
                "users": data.train_sequences.len(),
                "training_files": written,
            });
            std::fs::write(
                out.join("manifest.json"),
                serde_json::to_string_pretty(&manifest)?,
            )?;
            io::finish_dir(&out, &final_out)?;
            eprintln!(
                "{} train and {} test requests, variants {:?}, written to {} in {:.1} s",
                data.train.len(),
                data.test.len(),
                variants,
                final_out.display(),
                start.elapsed().as_secs_f64()
            );
        }
        Command::Bench {
            model,
            test,
            n,
            extension,
            options,
            batch_n_batch,
            json,
        } => {
            let mut instances: Vec<kvrec_finetune::protocol::Instance> = io::read_jsonl(&test)?;
            instances.truncate(n);
            let rows = bench::run(&model, &extension, &instances, &options, batch_n_batch)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!("{}", bench::markdown(&rows));
                let devices = kvrec_llm::devices();
                println!(
                    "llama.cpp devices: {}",
                    if devices.is_empty() {
                        "none found".to_string()
                    } else {
                        devices.join("; ")
                    }
                );
            }
        }
        Command::Train {
            data,
            out,
            resume,
            gguf,
            seed,
            vocab,
            d_model,
            layers,
            heads,
            ff,
            context,
            batch,
            epochs,
            lr,
            warmup,
            checkpoint_every,
            loss_items,
            untied,
            template,
            max_history,
            candidate_id,
            number_tokens,
            history_loss,
            answer_weight,
            init_from,
            stop_after,
            base,
            lora_rank,
            lora_alpha,
            lora_targets,
            lora_layers,
            order_rest_by,
            sequence_window,
            attention_span,
            dropout,
            valid,
            patience,
        } => {
            let mut template = match template {
                Some(path) => TemplateSpec::from_json(&serde_json::from_str(
                    &std::fs::read_to_string(&path)
                        .with_context(|| format!("reading {}", path.display()))?,
                )?)
                .with_context(|| format!("the template in {}", path.display()))?,
                None => TemplateSpec::default(),
            };
            if let Some(max_history) = max_history {
                template.max_history = max_history;
            }
            template.candidate_id = match candidate_id.as_deref() {
                None => template.candidate_id,
                Some("first") => CandidateIdPosition::First,
                Some("last") => CandidateIdPosition::Last,
                Some(other) => bail!("unknown --candidate-id '{other}'; use first or last"),
            };
            let config = TrainConfig {
                data: data.clone(),
                seed,
                vocab_size: vocab,
                d_model,
                layers,
                heads,
                ff,
                context,
                batch,
                epochs,
                lr,
                warmup_steps: warmup,
                weight_decay: 0.01,
                loss_items,
                tied: !untied,
                checkpoint_every,
                template,
                number_tokens,
                history_loss,
                answer_weight,
                init_from,
                lora: base.as_ref().map(|_| LoraSpec {
                    rank: lora_rank,
                    alpha: lora_alpha,
                    targets: lora_targets,
                    layers: lora_layers,
                }),
                base,
                order_rest_by,
                sequence_window,
                attention_span,
                dropout,
                valid: valid.clone(),
                patience,
            };
            let summary = if sequence_window > 0 {
                let mut sequences: Vec<Sequence> = Vec::new();
                for path in &data {
                    sequences.extend(io::read_jsonl::<Sequence>(path)?);
                }
                let valid: Vec<protocol::Instance> = match &valid {
                    Some(path) => io::read_jsonl(path)?,
                    None => Vec::new(),
                };
                train::carry_item_ids(&data, &out)?;
                let corpus = train::Corpus::Sequences {
                    sequences: &sequences,
                    valid: &valid,
                };
                train::run_corpus(&config, corpus, &out, resume, stop_after, true)?
            } else {
                let mut rows: Vec<TrainingRow> = Vec::new();
                for path in &data {
                    rows.extend(io::read_jsonl::<TrainingRow>(path)?);
                }
                train::run(&config, &rows, &out, resume, stop_after, true)?
            };
            eprintln!("{}", serde_json::to_string_pretty(&summary)?);
            if let Some(path) = gguf {
                train::export::export(&out, &path, GgmlDType::F16, "kvrec")?;
                eprintln!("wrote {}", path.display());
            }
        }
        Command::Export {
            run,
            out,
            dtype,
            name,
            adapter,
        } => {
            let dtype = train::export::parse_dtype(&dtype)?;
            let shape = train::export::export(&run, &out, dtype, &name)?;
            eprintln!("wrote {} ({shape:?})", out.display());
            if let Some(path) = adapter {
                train::export::export_adapter(&run, &path)?;
                eprintln!("wrote {}", path.display());
            }
        }
        Command::TinyModel { out, seed } => {
            kvrec_llm::tiny::write_tiny_llama(&out, seed, None)?;
            eprintln!("wrote {}", out.display());
        }
        Command::Eval {
            test,
            sqlite,
            duckdb,
            table,
            sequences,
            model,
            mode,
            limit,
            baseline,
            window,
            decay,
            normalize,
            seed,
            json,
            out,
            per_request,
            catalog,
        } => {
            let instances = match (test, sqlite, duckdb) {
                (Some(path), _, _) => io::read_jsonl(&path)?,
                (None, Some(path), _) => io::read_sqlite(&path, &table)?,
                (None, None, Some(path)) => io::read_duckdb(&path, &table)?,
                (None, None, None) => {
                    bail!("pass --test <test.jsonl>, --sqlite <file> or --duckdb <file> [--table <name>]")
                }
            };
            let mut instances = instances;
            if let Some(n) = limit {
                instances.truncate(n);
            }
            let none = baseline.iter().any(|b| b == "none");
            let sequences: Vec<Sequence> = match &sequences {
                Some(path) => io::read_jsonl(path)?,
                None if none => Vec::new(),
                None => bail!("pass --sequences <train_sequences.jsonl> for the baselines, or --baseline none"),
            };
            let all = baseline.iter().any(|b| b == "all");
            let wants = |name: &str| all || baseline.iter().any(|b| b == name);
            let mut scorers: Vec<Box<dyn Scorer>> = Vec::new();
            if wants("random") {
                scorers.push(Box::new(RandomScorer { seed }));
            }
            if wants("popularity") {
                scorers.push(Box::new(PopularityScorer::new(&sequences)));
            }
            if wants("cooccurrence") {
                let tuned = CoWatchParams::default();
                let params = CoWatchParams {
                    window: window.unwrap_or(tuned.window),
                    decay: decay.unwrap_or(tuned.decay),
                    normalize: normalize.unwrap_or(tuned.normalize),
                };
                scorers.push(Box::new(CoOccurrenceScorer::new(&sequences, params)));
            }
            if scorers.is_empty() && !none {
                bail!("no known baseline in {baseline:?}; use random, popularity, cooccurrence, all or none");
            }
            let loaded = match &model {
                Some(path) => {
                    let name = path
                        .file_stem()
                        .map_or("model".into(), |s| s.to_string_lossy().into_owned());
                    let path = path.to_str().context("model path is not UTF-8")?;
                    kvrec_llm::registry::load(
                        &name,
                        path,
                        &kvrec_core::options::Options::default(),
                    )?;
                    Some(kvrec_llm::registry::get(&name)?)
                }
                None => None,
            };
            if catalog {
                let eligible = catalog_eval::Eligible::new(&sequences);
                let mut rows = scorers
                    .iter()
                    .map(|s| catalog_eval::evaluate(s.as_ref(), &instances, &eligible))
                    .collect::<Result<Vec<_>>>()?;
                if let Some(model) = &loaded {
                    rows.push(catalog_eval::evaluate_model(model, &instances, &eligible)?);
                }
                let text = if json {
                    serde_json::to_string_pretty(&rows)?
                } else {
                    catalog_eval::markdown(&rows)
                };
                println!("{text}");
                if let Some(path) = out {
                    io::write_atomically(&path, text.as_bytes())?;
                }
                return Ok(());
            }
            let mut rows = scorers
                .iter()
                .map(|s| eval::evaluate(s.as_ref(), &instances))
                .collect::<Result<Vec<_>>>()?;
            if let Some(loaded) = loaded {
                for m in &mode {
                    rows.push(eval::evaluate_model(&loaded, &instances, m.mode())?);
                }
            }
            let text = if json {
                serde_json::to_string_pretty(&rows)?
            } else {
                format!(
                    "{}\n{}",
                    eval::markdown(&rows),
                    eval::paired_markdown(&rows, seed)
                )
            };
            if let Some(path) = per_request {
                io::write_atomically(&path, eval::per_request_csv(&rows, &instances).as_bytes())?;
            }
            println!("{text}");
            if let Some(path) = out {
                std::fs::write(path, &text)?;
            }
        }
    }
    Ok(())
}
