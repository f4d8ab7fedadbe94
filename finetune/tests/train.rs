//! Training end to end on a tiny model: train → checkpoint → resume → export → llama.cpp,
//! with llama.cpp's candidate scores checked against the training-side forward.

use kvrec_test_support as common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use candle_core::quantized::GgmlDType;
use kvrec_core::options::Options;
use kvrec_core::template::TemplateSpec;
use kvrec_core::Request;
use kvrec_finetune::interactions::Interactions;
use kvrec_finetune::movielens;
use kvrec_finetune::protocol::{build, Instance, ProtocolConfig, Sequence};
use kvrec_finetune::train::base::Base;
use kvrec_finetune::train::lora::{self, Lora, LoraSpec};
use kvrec_finetune::train::sequence::ItemClasses;
use kvrec_finetune::train::{
    self, bpe, checkpoint,
    item_features::{columns::FeatureColumns, keys as item_keys, vectors as item_vectors},
    model,
    model::Transformer,
    TargetOptions, TrainConfig,
};
use kvrec_finetune::training_data::{self, TrainingRow};
use kvrec_llm::llama_file::LlamaShape;
use kvrec_llm::trie::CandidateTrie;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kvrec-train-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn rows() -> Vec<TrainingRow> {
    let fixture = common::ml_tiny();
    let data = build(
        &movielens::read(&fixture).unwrap(),
        &ProtocolConfig {
            candidates: 5,
            candidate_keys: vec!["genres".into(), "co_watch".into()],
            train_targets: 2,
            ..ProtocolConfig::default()
        },
    );
    training_data::rows(&data.train, "SO", 1, 7).unwrap()
}

fn tiny_config() -> TrainConfig {
    TrainConfig {
        vocab_size: 400,
        d_model: 32,
        layers: 2,
        heads: 2,
        ff: 64,
        context: 1024,
        batch: 2,
        epochs: 2.0,
        lr: 3e-3,
        warmup_steps: 2,
        checkpoint_every: 3,
        template: TemplateSpec {
            max_history: 5,
            ..TemplateSpec::default()
        },
        ..TrainConfig::default()
    }
}

/// llama.cpp's ranking scores equal the training forward's `expected` (by candidate position).
fn assert_scores_match(ranking: &kvrec_llm::Ranking, request: &Request, expected: &[f64]) {
    for (id, score) in ranking.ids.iter().zip(&ranking.scores) {
        let at = request.candidates.iter().position(|c| c.id == *id).unwrap();
        let expected = expected[at];
        assert!(
            (expected - score).abs() < 1e-2 + 1e-3 * expected.abs(),
            "candidate {id}: candle {expected} vs llama.cpp {score}"
        );
    }
}

/// `request` ranked by the model loaded in the registry as `name`.
fn ranked(name: &str, request: &Request) -> kvrec_llm::Ranking {
    let model = kvrec_llm::registry::get(name).unwrap();
    ranked_by(&model, request, &Options::default())
}

/// `request` ranked by `model` with `options`, never cancelled.
fn ranked_by(model: &kvrec_llm::Model, request: &Request, options: &Options) -> kvrec_llm::Ranking {
    kvrec_llm::rank(model, request, options, &kvrec_llm::Cancel::none()).unwrap()
}

fn curve(dir: &std::path::Path) -> Vec<(usize, f64)> {
    std::fs::read_to_string(dir.join("loss.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[0].parse().unwrap(), f[2].parse().unwrap())
        })
        .collect()
}

/// Mean training loss of a run's first and last epochs.
fn first_and_last_epoch_loss(run: &std::path::Path, epochs: usize) -> (f64, f64) {
    let losses = curve(run);
    let per_epoch = losses.len() / epochs;
    let mean = |range: std::ops::Range<usize>| {
        losses[range.clone()].iter().map(|(_, l)| l).sum::<f64>() / range.len() as f64
    };
    (
        mean(0..per_epoch),
        mean(losses.len() - per_epoch..losses.len()),
    )
}

#[test]
fn training_lowers_the_loss_and_resume_continues_the_same_curve() {
    let rows = rows();
    assert!(rows.len() >= 8, "fixture gives {} rows", rows.len());
    let config = tiny_config();

    let straight = scratch("straight");
    let summary = train::run(&config, &rows, &straight, false, None, false).unwrap();
    let full = curve(&straight);
    assert_eq!(full.len(), summary.steps);
    let first = full[..2].iter().map(|r| r.1).sum::<f64>() / 2.0;
    let last = full[full.len() - 2..].iter().map(|r| r.1).sum::<f64>() / 2.0;
    assert!(
        last < first * 0.8,
        "loss {first:.3} → {last:.3} did not fall"
    );

    // Continued training starts where the straight run ended, with its tokenizer.
    let continued = scratch("continued");
    let mut from_straight = config.clone();
    from_straight.init_from = Some(straight.clone());
    from_straight.epochs = 0.5;
    train::run(&from_straight, &rows, &continued, false, None, false).unwrap();
    assert_eq!(
        std::fs::read(continued.join("tokenizer.json")).unwrap(),
        std::fs::read(straight.join("tokenizer.json")).unwrap()
    );
    let start = curve(&continued)[0].1;
    assert!(
        start < first * 0.8,
        "continued run starts at loss {start:.3}, a fresh one at {first:.3}"
    );

    let interrupted = scratch("interrupted");
    train::run(&config, &rows, &interrupted, false, Some(4), false).unwrap();
    assert_eq!(curve(&interrupted).len(), 4);
    train::run(&config, &rows, &interrupted, true, None, false).unwrap();
    let resumed = curve(&interrupted);
    assert_eq!(resumed.len(), full.len());
    for ((step, a), (_, b)) in full.iter().zip(&resumed) {
        assert!(
            (a - b).abs() < 1e-4,
            "step {step}: {a} uninterrupted vs {b} resumed"
        );
    }

    let mut other = config.clone();
    other.lr *= 2.0;
    let err = train::run(&other, &rows, &interrupted, true, None, false).unwrap_err();
    assert!(err.to_string().contains("another configuration"), "{err}");
}

#[test]
fn exported_gguf_scores_like_the_training_forward() {
    let mut config = tiny_config();
    config.epochs = 0.5;
    let (ours, request, run) = export_and_compare(&config, "export");
    assert!(ours.len() > 50);

    // Q8_0 keeps every score within its rounding of the F32 file's, in a file a quarter the size.
    let q8 = run.join("model-q8.gguf");
    train::export::export(&run, &q8, GgmlDType::Q8_0, "test").unwrap();
    let f32_len = std::fs::metadata(run.join("model.gguf")).unwrap().len();
    let q8_len = std::fs::metadata(&q8).unwrap().len();
    kvrec_llm::registry::load("export-q8", q8.to_str().unwrap(), &Options::default()).unwrap();
    let quantized = ranked("export-q8", &request);
    let full = ranked("export", &request);
    let mut moved = 0f64;
    for (id, score) in full.ids.iter().zip(&full.scores) {
        let at = quantized.ids.iter().position(|q| q == id).unwrap();
        moved = moved.max((quantized.scores[at] - score).abs());
    }
    assert!(moved < 0.05, "Q8_0 moved a score by {moved}");
    assert!(
        q8_len * 3 < f32_len,
        "Q8_0 file {q8_len} bytes, F32 {f32_len}"
    );
}

/// The sequential layout: history ids rendered, ids one token each, loss on every history id.
#[test]
fn number_tokens_and_history_loss_train_and_export() {
    let mut config = tiny_config();
    config.epochs = 0.5;
    config.number_tokens = 3952;
    config.history_loss = true;
    config.template = TemplateSpec {
        history_id_label: Some("History movie IDs".into()),
        history_keys: Some(vec![]),
        candidate_keys: Some(vec!["co_watch".into()]),
        ..config.template
    };
    let rows = rows();
    let tokenizer = {
        let run = scratch("numbers-tokenizer");
        let mut one_step = config.clone();
        one_step.epochs = 0.01;
        train::run(&one_step, &rows, &run, false, None, false).unwrap();
        bpe::load(&run.join("tokenizer.json")).unwrap()
    };
    let examples =
        train::examples(&rows, &tokenizer, &config.template, 1024, 1, true, false).unwrap();
    for (row, example) in rows.iter().zip(&examples) {
        let request = Request::from_object(&row.request).unwrap();
        let rendered: Vec<u32> = request
            .history
            .iter()
            .rev()
            .take(config.template.max_history)
            .rev()
            .map(|h| bpe::encode(&tokenizer, &h.id.unwrap().to_string()).unwrap())
            .map(|t| {
                assert_eq!(t.len(), 1, "an id is one token");
                t[0]
            })
            .collect();
        let targets: Vec<u32> = example
            .prompt_targets
            .iter()
            .map(|&p| example.ids[p])
            .collect();
        assert_eq!(
            targets, rendered,
            "every rendered history id is a target, in order"
        );
    }
    let (ours, ..) = export_and_compare(&config, "numbers");
    let history = rows[0].request["history"].as_array().unwrap();
    // The oldest of the (at most 5) rendered history items.
    let first_history_id = history[history.len().saturating_sub(5)]["id"]
        .as_i64()
        .unwrap();
    let id_token = bpe::encode(&tokenizer, &first_history_id.to_string()).unwrap()[0];
    assert!(
        ours.contains(&id_token),
        "the prompt holds the history id's token"
    );
}

/// Trains `config` on the fixture rows, exports F32, loads the GGUF in llama.cpp and checks
/// the template, the prompt's tokens and the candidate scores against the training side;
/// returns the prompt's tokens, the request scored and the run directory (its F32 GGUF is
/// `model.gguf`, loaded in the registry as `name`).
fn export_and_compare(config: &TrainConfig, name: &str) -> (Vec<u32>, Request, PathBuf) {
    let rows = rows();
    let run = scratch(name);
    train::run(config, &rows, &run, false, None, false).unwrap();
    let (tokenizer, model) = export_and_load(&run, name);
    let served = kvrec_llm::registry::get(name).unwrap();
    assert_eq!(
        served.template, config.template,
        "template travels in the GGUF"
    );

    let request = Request::from_object(&rows[0].request).unwrap();
    let prompt = config.template.render_prompt(&request);
    let ours = same_tokens(&tokenizer, &served, &prompt);

    let ranking = ranked_by(&served, &request, &Options::default());
    // The same constrained scores from candle's log-probabilities at each branching node.
    let (prompt_ids, prefixes) = scoring_inputs(&tokenizer, &config.template, &request, &ours);
    if config.number_tokens == 0 {
        let as_i32: Vec<Vec<i32>> = prefixes
            .iter()
            .map(|p| p.iter().map(|&t| t as i32).collect())
            .collect();
        assert!(
            !CandidateTrie::new(&as_i32).to_decode().is_empty(),
            "the fixture's ids share leading digits, so nodes past the prompt are scored too"
        );
    }
    let expected = model.candidate_scores(&prompt_ids, &prefixes).unwrap();
    assert_scores_match(&ranking, &request, &expected);
    (ours, request, run)
}

/// Exports `run`'s best (else latest) checkpoint as F32 `model.gguf`, loads it into the
/// registry as `name`, and returns the run's tokenizer and the same weights in candle.
fn export_and_load(run: &std::path::Path, name: &str) -> (tokenizers::Tokenizer, Transformer) {
    let gguf = run.join("model.gguf");
    train::export::export(run, &gguf, GgmlDType::F32, "test").unwrap();
    let tokenizer = bpe::load(&run.join("tokenizer.json")).unwrap();
    let (weights, saved) = checkpoint::best(run).unwrap().unwrap();
    let shape = LlamaShape {
        n_vocab: tokenizer.get_vocab_size(true),
        ..saved.config.shape()
    };
    let (model, _) = checkpoint::load_model(&weights, shape, saved.config.tied).unwrap();
    kvrec_llm::registry::load(name, gguf.to_str().unwrap(), &Options::default()).unwrap();
    (tokenizer, model)
}

/// `prompt`'s tokens, checked to be the same from `tokenizers` and from llama.cpp.
fn same_tokens(
    tokenizer: &tokenizers::Tokenizer,
    served: &kvrec_llm::Model,
    prompt: &str,
) -> Vec<u32> {
    let ours = bpe::encode(tokenizer, prompt).unwrap();
    let theirs: Vec<u32> = served
        .tokenize(prompt, false)
        .iter()
        .map(|t| t.0 as u32)
        .collect();
    assert_eq!(
        ours, theirs,
        "llama.cpp tokenizes {prompt:?} as tokenizers does"
    );
    ours
}

/// What candle's `candidate_scores` takes for `request`: BOS + the prompt's tokens, and each
/// candidate's answer prefix as tokens.
fn scoring_inputs(
    tokenizer: &tokenizers::Tokenizer,
    template: &TemplateSpec,
    request: &Request,
    prompt: &[u32],
) -> (Vec<u32>, Vec<Vec<u32>>) {
    let mut ids = vec![bpe::token_id(tokenizer, bpe::BOS).unwrap()];
    ids.extend(prompt);
    let prefixes = request
        .candidates
        .iter()
        .map(|c| bpe::encode(tokenizer, &template.answer_prefix(c.id)).unwrap())
        .collect();
    (ids, prefixes)
}

/// A small random llama GGUF (GQA, untied head) as the LoRA base.
fn lora_base(dir: &std::path::Path) -> PathBuf {
    let path = dir.join("base.gguf");
    kvrec_llm::tiny::write_random_llama(&path, 11, None, 64, 2).unwrap();
    path
}

fn lora_config(base: PathBuf) -> TrainConfig {
    TrainConfig {
        base: Some(base),
        lora: Some(LoraSpec {
            rank: 4,
            alpha: 8.0,
            targets: vec!["q".into(), "v".into(), "o".into(), "down".into()],
            layers: vec![1],
        }),
        lr: 1e-2,
        epochs: 1.0,
        ..tiny_config()
    }
}

#[test]
fn lora_merge_is_the_base_plus_scaled_product() {
    let dir = scratch("lora-merge");
    let base = Base::read(&lora_base(&dir)).unwrap();
    let mut model = base.model().unwrap();
    let spec = LoraSpec {
        rank: 3,
        alpha: 6.0,
        targets: vec!["k".into(), "gate".into()],
        layers: vec![],
    };
    // Adapters with B ≠ 0 (fresh ones start at B = 0, a no-op).
    let fresh = Lora::init(&spec, &model.lora_sites(&spec).unwrap(), 1).unwrap();
    let mut rng = kvrec_core::rng::Rng::new(5);
    let saved: HashMap<String, Tensor> = fresh
        .tensors()
        .into_iter()
        .map(|(name, var)| {
            let n = var.elem_count();
            let values: Vec<f32> = (0..n)
                .map(|_| (rng.next_u64() % 2001) as f32 / 1000.0 - 1.0)
                .collect();
            let t = Tensor::from_vec(values, var.dims(), &Device::Cpu).unwrap();
            (name, t)
        })
        .collect();
    let lora = Lora::from_tensors(&spec, &model.lora_sites(&spec).unwrap(), &saved).unwrap();
    assert_eq!(lora.pairs().count(), 4, "2 targets × 2 layers");
    let merged = lora::merged(&model.vars, &lora).unwrap();
    for (i, weight) in &merged {
        let pair = lora.pair(*i).unwrap();
        let w = model.vars[*i].as_tensor().to_vec2::<f32>().unwrap();
        let a = pair.a.as_tensor().to_vec2::<f32>().unwrap();
        let b = pair.b.as_tensor().to_vec2::<f32>().unwrap();
        let got = weight.to_vec2::<f32>().unwrap();
        for (r, row) in got.iter().enumerate() {
            for (c, &value) in row.iter().enumerate() {
                let product: f32 = (0..spec.rank).map(|k| b[r][k] * a[k][c]).sum();
                let expected = w[r][c] + 2.0 * product;
                assert!(
                    (value - expected).abs() < 1e-5,
                    "{} [{r},{c}]: {value} vs {expected}",
                    pair.name
                );
            }
        }
    }
    // The adapted forward equals the merged model's plain forward.
    let ids = Tensor::new(&[[0u32, 5, 80, 7, 120, 9, 33]], &Device::Cpu).unwrap();
    model.lora = Some(lora);
    let adapted = model.hidden(&ids).unwrap();
    let mut weights = model.weights().unwrap();
    for (i, weight) in merged {
        weights[i].2 = weight.flatten_all().unwrap().to_vec1().unwrap();
    }
    let plain = Transformer::new(
        model.arch,
        model.shape,
        weights,
        model.tied,
        model.rope_theta,
        model.rms_eps,
    )
    .unwrap();
    let diff = (adapted - plain.hidden(&ids).unwrap())
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(diff < 1e-4, "adapted vs merged forward differ by {diff}");
}

#[test]
fn lora_trains_resumes_merges_and_llama_cpp_serves_the_merge() {
    let rows = rows();
    let dir = scratch("lora-run");
    let config = lora_config(lora_base(&dir));
    let run = dir.join("run");
    let summary = train::run(&config, &rows, &run, false, None, false).unwrap();
    assert_eq!(
        summary.parameters,
        // q, v, o, down of layer 1 at rank 4: A (4 × in) + B (out × 4).
        4 * (64 + 64) + 4 * (64 + 32) + 4 * (64 + 64) + 4 * (128 + 64)
    );
    let full = curve(&run);
    let first = full[..2].iter().map(|r| r.1).sum::<f64>() / 2.0;
    let last = full[full.len() - 2..].iter().map(|r| r.1).sum::<f64>() / 2.0;
    assert!(
        last < first * 0.8,
        "LoRA loss {first:.3} → {last:.3} did not fall"
    );

    let interrupted = dir.join("interrupted");
    train::run(&config, &rows, &interrupted, false, Some(3), false).unwrap();
    train::run(&config, &rows, &interrupted, true, None, false).unwrap();
    for ((step, a), (_, b)) in full.iter().zip(&curve(&interrupted)) {
        assert!((a - b).abs() < 1e-4, "step {step}: {a} vs resumed {b}");
    }

    // The merged F32 export scores in llama.cpp as the adapted candle forward does.
    let (weights, saved) = checkpoint::latest(&run).unwrap().unwrap();
    let (_, model) = train::export::lora_run(&weights, &saved).unwrap();
    let merged = dir.join("merged-f32.gguf");
    train::export::export(&run, &merged, GgmlDType::F32, "lora").unwrap();
    kvrec_llm::registry::load("lora-merged", merged.to_str().unwrap(), &Options::default())
        .unwrap();
    let served = kvrec_llm::registry::get("lora-merged").unwrap();
    assert_eq!(
        served.template, config.template,
        "template travels in the merge"
    );
    let request = Request::from_object(&rows[0].request).unwrap();
    let tokens = |text: &str, bos: bool| -> Vec<u32> {
        served
            .tokenize(text, bos)
            .iter()
            .map(|t| t.0 as u32)
            .collect()
    };
    let prompt = tokens(&config.template.render_prompt(&request), true);
    let prefixes: Vec<Vec<u32>> = request
        .candidates
        .iter()
        .map(|c| tokens(&config.template.answer_prefix(c.id), false))
        .collect();
    let expected = model.candidate_scores(&prompt, &prefixes).unwrap();
    let ranking = ranked_by(&served, &request, &Options::default());
    assert_scores_match(&ranking, &request, &expected);

    // Q8_0 merges load and stay close; the adapter file is a llama.cpp LoRA GGUF.
    let q8 = dir.join("merged-q8.gguf");
    train::export::export(&run, &q8, GgmlDType::Q8_0, "lora").unwrap();
    kvrec_llm::registry::load("lora-q8", q8.to_str().unwrap(), &Options::default()).unwrap();
    let q8_ranking = ranked("lora-q8", &request);
    for (id, score) in q8_ranking.ids.iter().zip(&q8_ranking.scores) {
        let at = request.candidates.iter().position(|c| c.id == *id).unwrap();
        assert!(
            (expected[at] - score).abs() < 0.05,
            "Q8_0 candidate {id}: {} vs {score}",
            expected[at]
        );
    }
    // The adapter alone, applied by llama.cpp to the unchanged base, ranks as the merge does.
    let adapter = dir.join("adapter.gguf");
    train::export::export_adapter(&run, &adapter).unwrap();
    let options = Options::parse(
        Some(&serde_json::json!({ "lora": adapter.to_str().unwrap() }).to_string()),
        kvrec_core::options::LOAD_OPTIONS,
    )
    .unwrap();
    let base_path = config.base.as_ref().unwrap().to_str().unwrap();
    kvrec_llm::registry::load("lora-adapter", base_path, &options).unwrap();
    let adapted = kvrec_llm::registry::get("lora-adapter").unwrap();
    // The base carries no template: the run's is the default one with a shorter history.
    assert_eq!(
        config.template,
        TemplateSpec {
            max_history: 5,
            ..TemplateSpec::default()
        }
    );
    let with_template = Options {
        max_history: Some(5),
        ..Options::default()
    };
    let adapter_ranking = ranked_by(&adapted, &request, &with_template);
    assert_eq!(adapter_ranking.ids, ranking.ids);
    for (a, b) in adapter_ranking.scores.iter().zip(&ranking.scores) {
        assert!((a - b).abs() < 1e-2, "adapter {a} vs merged {b}");
    }
    kvrec_llm::registry::load("lora-plain-base", base_path, &Options::default()).unwrap();
    let plain = ranked_by(
        &kvrec_llm::registry::get("lora-plain-base").unwrap(),
        &request,
        &with_template,
    );
    assert_ne!(
        plain.scores, adapter_ranking.scores,
        "the adapter changed nothing"
    );
}

/// The fixture's data for the sequence stage: each user's training sequence and the
/// validation requests of their last training items.
/// The largest absolute difference between two tensors of one shape.
fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap()
}

fn sequence_data() -> (Vec<Sequence>, Vec<Instance>) {
    let data = build(
        &movielens::read(&common::ml_tiny()).unwrap(),
        &ProtocolConfig {
            candidates: 5,
            ..ProtocolConfig::default()
        },
    );
    (data.train_sequences, data.train)
}

fn sequence_config() -> TrainConfig {
    let (sequences, _) = sequence_data();
    let max_id = sequences.iter().flat_map(|s| s.items.iter()).max().unwrap();
    TrainConfig {
        vocab_size: 300,
        d_model: 32,
        layers: 2,
        heads: 1,
        ff: 64,
        context: 64,
        batch: 4,
        epochs: 12.0,
        lr: 1e-2,
        warmup_steps: 2,
        checkpoint_every: 1000,
        tied: false,
        number_tokens: *max_id as usize + 5,
        sequence_window: 8,
        // As the default recipe: targets read the template's history length, as served.
        attention_span: 3,
        dropout: 0.1,
        valid: Some("train.jsonl".into()),
        template: TemplateSpec::from_json(&serde_json::json!({
            "version": 4, "layout": "sequence", "list_separator": " ", "max_history": 3
        }))
        .unwrap(),
        ..TrainConfig::default()
    }
}

#[test]
fn the_sequence_stage_learns_next_items_and_llama_cpp_scores_its_export_alike() {
    let (sequences, valid) = sequence_data();
    let config = sequence_config();
    let run = scratch("sequence");
    let corpus = train::Corpus::Sequences {
        sequences: &sequences,
        valid: &valid,
    };
    let summary = train::run_corpus(&config, corpus, &run, false, None, false).unwrap();
    let (first, last) = first_and_last_epoch_loss(&run, 12);
    assert!(
        last < first - 0.5,
        "the next-item loss falls: first epoch {first}, last {last}"
    );
    assert!(summary.steps > 12, "{summary:?}");
    let validation = std::fs::read_to_string(run.join("valid.csv")).unwrap();
    assert_eq!(
        validation.lines().count(),
        13,
        "a validation row per epoch:\n{validation}"
    );
    assert!(run.join("best.json").exists(), "the best epoch is kept");

    // The export (the best epoch) served by llama.cpp ranks as candle's forward does.
    let (tokenizer, model) = export_and_load(&run, "sequence");
    let served = kvrec_llm::registry::get("sequence").unwrap();
    assert_eq!(served.template, config.template);
    for instance in valid.iter().take(4) {
        let request = instance.request().unwrap();
        let prompt = config.template.render_prompt(&request);
        let ours = same_tokens(&tokenizer, &served, &prompt);
        let history = request.history.len().min(3);
        assert_eq!(ours.len(), history, "one token per spaced id: {prompt:?}");
        let (prompt_ids, prefixes) = scoring_inputs(&tokenizer, &config.template, &request, &ours);
        let expected = model.candidate_scores(&prompt_ids, &prefixes).unwrap();
        assert_scores_match(&ranked("sequence", &request), &request, &expected);
    }

    // The co-watch prior a fit chose travels into the export; a broken one is an error that
    // names its file.
    let params = kvrec_finetune::cowatch::CoWatchParams::default();
    let prior =
        kvrec_finetune::cowatch::CoWatch::new(&sequences, params.window).prior(params, 2.0, 64);
    let prior_file = run.join(train::export::PRIOR_FILE);
    std::fs::write(&prior_file, prior.to_json()).unwrap();
    let gguf = run.join("with-prior.gguf");
    train::export::export(&run, &gguf, GgmlDType::F16, "with-prior").unwrap();
    kvrec_llm::registry::load("with-prior", gguf.to_str().unwrap(), &Options::default()).unwrap();
    let with_prior = kvrec_llm::registry::get("with-prior").unwrap();
    assert_eq!(with_prior.prior.as_ref(), Some(&prior));
    assert_eq!(served.prior, None, "a run without the file exports none");
    kvrec_llm::registry::unload("with-prior").unwrap();
    std::fs::write(&prior_file, "{\"weight\": 2}").unwrap();
    let broken = train::export::export(&run, &gguf, GgmlDType::F16, "broken").unwrap_err();
    assert!(
        format!("{broken:#}").contains("cowatch_prior.json is not a co-watch prior"),
        "{broken:#}"
    );
    std::fs::remove_file(&prior_file).unwrap();
}

#[test]
fn the_sequence_stage_refuses_what_it_cannot_train() {
    let (sequences, valid) = sequence_data();
    let corpus = train::Corpus::Sequences {
        sequences: &sequences,
        valid: &valid,
    };
    let run = scratch("sequence-errors");
    let err = |config: TrainConfig| {
        format!(
            "{:#}",
            train::run_corpus(&config, corpus, &run, false, Some(1), false).unwrap_err()
        )
    };
    let few_numbers = err(TrainConfig {
        number_tokens: 3,
        ..sequence_config()
    });
    assert!(few_numbers.contains("--number-tokens"), "{few_numbers}");
    let instruction = err(TrainConfig {
        template: TemplateSpec::default(),
        ..sequence_config()
    });
    assert!(instruction.contains("layout 'sequence'"), "{instruction}");
    // Validation requests from another data run do not predict these sequences' last items.
    let mut other = valid.clone();
    other[0].positive += 1;
    let mismatched = format!(
        "{:#}",
        train::run_corpus(
            &sequence_config(),
            train::Corpus::Sequences {
                sequences: &sequences,
                valid: &other,
            },
            &run,
            false,
            Some(1),
            false
        )
        .unwrap_err()
    );
    assert!(mismatched.contains("train.jsonl"), "{mismatched}");
}

#[test]
fn an_averaged_run_ranks_and_exports_its_average_and_resumes_to_the_same_average() {
    let (sequences, valid) = sequence_data();
    let validated = scratch("average-validated");
    let config = TrainConfig {
        ema: 0.9,
        epochs: 3.0,
        ..sequence_config()
    };
    let corpus = train::Corpus::Sequences {
        sequences: &sequences,
        valid: &valid,
    };
    train::run_corpus(&config, corpus, &validated, false, None, false).unwrap();
    let validation = std::fs::read_to_string(validated.join("valid.csv")).unwrap();
    let mut lines = validation.lines();
    assert_eq!(lines.next(), Some("step,epoch,hr1,ndcg3,raw_hr1,raw_ndcg3"));
    for row in lines {
        let fields: Vec<f64> = row.split(',').map(|f| f.parse().unwrap()).collect();
        assert_eq!(fields.len(), 6, "{row}");
        assert!(fields[2..].iter().all(|v| (0.0..=1.0).contains(v)), "{row}");
    }

    // Without validation nothing ranks the epochs: the best is the latest average, under the
    // weights' own names, and export writes it.
    let corpus = train::Corpus::Sequences {
        sequences: &sequences,
        valid: &[],
    };
    let config = TrainConfig {
        valid: None,
        ..config
    };
    let straight = scratch("average");
    train::run_corpus(&config, corpus, &straight, false, None, false).unwrap();
    let saved = checkpoint::tensors(&straight.join("checkpoint.safetensors")).unwrap();
    let (best_path, _) = checkpoint::best(&straight).unwrap().unwrap();
    let best = checkpoint::tensors(&best_path).unwrap();
    let mut moved = 0f32;
    for (name, weights) in &best {
        assert_eq!(
            max_diff(weights, &saved[&format!("ema.{name}")]),
            0.0,
            "{name}"
        );
        moved = moved.max(max_diff(weights, &saved[name]));
    }
    assert_eq!(best.len() * 4, saved.len(), "weights, two moments, average");
    assert!(moved > 1e-4, "the average is not the raw weights ({moved})");
    let gguf = straight.join("model.gguf");
    train::export::export(&straight, &gguf, GgmlDType::F32, "average").unwrap();
    let mut file = std::fs::File::open(&gguf).unwrap();
    let content = candle_core::quantized::gguf_file::Content::read(&mut file).unwrap();
    for name in [
        "token_embd.weight",
        "blk.1.ffn_down.weight",
        "output.weight",
    ] {
        let written = content
            .tensor(&mut file, name, &Device::Cpu)
            .unwrap()
            .dequantize(&Device::Cpu)
            .unwrap();
        let average = &saved[&format!("ema.{name}")];
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(flat(&written), flat(average), "{name} is exported averaged");
    }

    // An interrupted run resumes its average where it stopped.
    let interrupted = scratch("average-interrupted");
    train::run_corpus(&config, corpus, &interrupted, false, Some(5), false).unwrap();
    train::run_corpus(&config, corpus, &interrupted, true, None, false).unwrap();
    let resumed = checkpoint::tensors(&interrupted.join("checkpoint.safetensors")).unwrap();
    for (name, tensor) in &saved {
        let diff = max_diff(tensor, &resumed[name]);
        assert!(diff < 1e-5, "{name}: {diff}");
    }
}

#[test]
fn shuffled_ties_change_what_is_trained_and_resume_to_the_same_weights() {
    let (mut sequences, valid) = sequence_data();
    // The fixture has no ties in time: put every three consecutive items in one second.
    for sequence in &mut sequences {
        sequence.times = (0..sequence.items.len() as i64).map(|i| i / 3).collect();
    }
    let corpus = train::Corpus::Sequences {
        sequences: &sequences,
        valid: &valid,
    };
    let config = TrainConfig {
        shuffle_ties: true,
        epochs: 3.0,
        ..sequence_config()
    };
    let straight = scratch("ties");
    train::run_corpus(&config, corpus, &straight, false, None, false).unwrap();
    let fixed = scratch("ties-fixed");
    let unshuffled = TrainConfig {
        shuffle_ties: false,
        ..config.clone()
    };
    train::run_corpus(&unshuffled, corpus, &fixed, false, None, false).unwrap();
    let (shuffled_curve, fixed_curve) = (curve(&straight), curve(&fixed));
    assert_eq!(shuffled_curve.len(), fixed_curve.len(), "the same steps");
    assert_ne!(
        shuffled_curve[0], fixed_curve[0],
        "the first epoch already trains on shuffled seconds"
    );

    // Stopped inside the second epoch, a resumed run orders that epoch's seconds as the
    // uninterrupted run did, and ends on the same weights.
    let per_epoch = shuffled_curve.len() / 3;
    assert_resumes_alike(
        &config,
        corpus,
        &straight,
        per_epoch + 2,
        "ties-interrupted",
    );

    // Training rows have no seconds to shuffle.
    let rows_run = scratch("ties-rows");
    let refused = format!(
        "{:#}",
        train::run(&config, &rows(), &rows_run, false, Some(1), false).unwrap_err()
    );
    assert!(refused.contains("train_sequences.jsonl"), "{refused}");
}

#[test]
fn masked_and_spread_targets_train_toward_their_goal_and_resume_alike() {
    let (sequences, valid) = sequence_data();
    let corpus = train::Corpus::Sequences {
        sequences: &sequences,
        valid: &valid,
    };
    let with = |targets: TargetOptions, epochs: f64| TrainConfig {
        targets,
        epochs,
        ..sequence_config()
    };
    let masked = TargetOptions {
        mask_seen: true,
        ..TargetOptions::default()
    };
    // The same weights and batch at step one: a softmax over fewer items loses less.
    let first_loss = |targets: TargetOptions, name: &str| {
        let run = scratch(name);
        train::run_corpus(&with(targets, 1.0), corpus, &run, false, Some(1), false).unwrap();
        curve(&run)[0].1
    };
    let (plain, masked_loss) = (
        first_loss(TargetOptions::default(), "targets-plain"),
        first_loss(masked, "targets-masked"),
    );
    assert!(masked_loss < plain - 1e-3, "{masked_loss} vs {plain}");

    // Every option at once, the sampled negatives' draws included in what must resume alike.
    let both = TargetOptions {
        mask_seen: true,
        mask_later: true,
        future_items: 3,
        future_decay: 0.5,
        sampled_negatives: 3,
        sampled_weight: 0.5,
        output_sample: 0,
    };
    let config = with(both, 6.0);
    let run = scratch("targets");
    train::run_corpus(&config, corpus, &run, false, None, false).unwrap();
    let (first, last) = first_and_last_epoch_loss(&run, 6);
    let per_epoch = curve(&run).len() / 6;
    assert!(
        last < first - 0.3,
        "the spread loss falls: {first} → {last}"
    );

    // run.json and the checkpoint carry the targets, so a stopped run resumes alike.
    assert_resumes_alike(&config, corpus, &run, per_epoch + 1, "targets-interrupted");

    // Training rows have no sequence to mask or to look ahead in.
    let refused = format!(
        "{:#}",
        train::run(
            &config,
            &rows(),
            &scratch("targets-rows"),
            false,
            Some(1),
            false
        )
        .unwrap_err()
    );
    assert!(refused.contains("train_sequences.jsonl"), "{refused}");
}

/// Runs `config` into a new folder `name`, stopped after `stop_after` steps and resumed, and
/// asserts that it ends on the weights of the uninterrupted run in `straight`.
fn assert_resumes_alike(
    config: &TrainConfig,
    corpus: train::Corpus,
    straight: &Path,
    stop_after: usize,
    name: &str,
) {
    let interrupted = scratch(name);
    train::run_corpus(config, corpus, &interrupted, false, Some(stop_after), false).unwrap();
    train::run_corpus(config, corpus, &interrupted, true, None, false).unwrap();
    let expected = checkpoint::tensors(&straight.join("checkpoint.safetensors")).unwrap();
    let resumed = checkpoint::tensors(&interrupted.join("checkpoint.safetensors")).unwrap();
    for (name, tensor) in &expected {
        let diff = max_diff(tensor, &resumed[name]);
        assert!(diff < 1e-5, "{name}: {diff}");
    }
}

/// `--shards`: a batch cut into shards trained side by side steps as the whole batch does
/// (each shard's loss weighted by its rows), trains the same weights on one thread or two,
/// and resumes alike.
#[test]
fn a_sharded_batch_steps_as_the_whole_batch_on_any_threads() {
    let (sequences, valid) = sequence_data();
    let corpus = train::Corpus::Sequences {
        sequences: &sequences,
        valid: &valid,
    };
    // Nothing drawn per shard: the shards' summed gradients are the batch's.
    let exact = TrainConfig {
        shards: 1,
        dropout: 0.0,
        targets: TargetOptions {
            mask_seen: true,
            future_items: 3,
            ..TargetOptions::default()
        },
        ..sequence_config()
    };
    let weights_after = |config: &TrainConfig, name: &str, threads: usize, steps: usize| {
        let run = scratch(name);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| train::run_corpus(config, corpus, &run, false, Some(steps), false))
            .unwrap();
        let curve = curve(&run);
        (
            curve,
            checkpoint::tensors(&run.join("checkpoint.safetensors")).unwrap(),
        )
    };
    let (whole_curve, whole) = weights_after(&exact, "shards-1", 2, 5);
    let sharded = TrainConfig {
        shards: 3,
        ..exact.clone()
    };
    let (sharded_curve, split) = weights_after(&sharded, "shards-3", 2, 5);
    for ((step, a), (_, b)) in whole_curve.iter().zip(&sharded_curve) {
        assert!(
            (a - b).abs() < 1e-4,
            "step {step}: loss {a} whole, {b} sharded"
        );
    }
    for (name, tensor) in &whole {
        let diff = max_diff(tensor, &split[name]);
        assert!(diff < 1e-4, "{name}: {diff}");
    }
    // That tolerance is far below what one step moves the weights.
    let (_, before) = weights_after(&exact, "shards-1-step-4", 2, 4);
    assert!(whole.iter().any(|(n, t)| max_diff(t, &before[n]) > 1e-3));

    // Dropout and drawn negatives per shard: the run depends on the shards, not on the threads.
    let drawn = TrainConfig {
        shards: 2,
        dropout: 0.1,
        targets: TargetOptions {
            sampled_negatives: 3,
            ..sharded.targets
        },
        ..sharded.clone()
    };
    let (_, one) = weights_after(&drawn, "shards-drawn-1", 1, 5);
    let (_, two) = weights_after(&drawn, "shards-drawn-2", 2, 5);
    for (name, tensor) in &one {
        assert_eq!(max_diff(tensor, &two[name]), 0.0, "{name}");
    }
    let straight = scratch("shards-straight");
    train::run_corpus(&drawn, corpus, &straight, false, None, false).unwrap();
    assert_resumes_alike(&drawn, corpus, &straight, 7, "shards-interrupted");

    let too_many = TrainConfig { shards: 5, ..exact };
    let refused = format!(
        "{:#}",
        train::run_corpus(
            &too_many,
            corpus,
            &scratch("shards-5"),
            false,
            Some(1),
            false
        )
        .unwrap_err()
    );
    assert!(refused.contains("--shards 5"), "{refused}");
}

/// `--output-sample`: each step's softmax over its targets and a few drawn items, in batches
/// of like length (`--length-buckets`, as fit trains). The loss falls, validation ranks the
/// full model, and an interrupted run draws the same samples and batches.
#[test]
fn a_sampled_output_layer_trains_and_resumes_alike() {
    let (sequences, valid) = sequence_data();
    let corpus = train::Corpus::Sequences {
        sequences: &sequences,
        valid: &valid,
    };
    let config = TrainConfig {
        targets: TargetOptions {
            mask_seen: true,
            output_sample: 5,
            ..TargetOptions::default()
        },
        epochs: 6.0,
        length_buckets: true,
        ..sequence_config()
    };
    let run = scratch("output-sample");
    train::run_corpus(&config, corpus, &run, false, None, false).unwrap();
    let (first, last) = first_and_last_epoch_loss(&run, 6);
    assert!(
        last < first - 0.2,
        "the sampled loss falls: {first} → {last}"
    );
    let validated = std::fs::read_to_string(run.join("valid.csv")).unwrap();
    assert_eq!(validated.lines().count(), 1 + 6, "{validated}");

    let per_epoch = curve(&run).len() / 6;
    assert_resumes_alike(
        &config,
        corpus,
        &run,
        per_epoch + 1,
        "output-sample-interrupted",
    );

    // With the protocol-shaped negatives it is one or the other.
    let both = TrainConfig {
        targets: TargetOptions {
            sampled_negatives: 3,
            ..config.targets
        },
        ..config.clone()
    };
    let refused = format!(
        "{:#}",
        train::run_corpus(
            &both,
            corpus,
            &scratch("output-sample-both"),
            false,
            Some(1),
            false
        )
        .unwrap_err()
    );
    assert!(refused.contains("do not go together"), "{refused}");
}

#[test]
fn item_keys_and_vectors_train_fold_into_the_export_and_llama_cpp_scores_alike() {
    let (sequences, valid) = sequence_data();
    let run = scratch("item-keys");
    let keys_file = run.join(item_keys::ITEM_KEYS_FILE);
    let interactions = Interactions::from(&movielens::read(&common::ml_tiny()).unwrap());
    let keys = item_keys::of_items(&interactions.items);
    kvrec_finetune::io::write_jsonl(&keys_file, &keys).unwrap();
    // Text vectors for every other item; the rest keep a zero row.
    let raw: Vec<(i64, Vec<f32>)> = keys
        .iter()
        .step_by(2)
        .map(|k| {
            (
                k.id,
                (1..=6).map(|d| (k.id as f32 * d as f32).sin()).collect(),
            )
        })
        .collect();
    let vectors: Vec<item_vectors::ItemVector> = raw
        .iter()
        .zip(item_vectors::standardized(
            raw.iter().map(|(_, v)| v.clone()).collect(),
        ))
        .map(|((id, _), vector)| item_vectors::ItemVector { id: *id, vector })
        .collect();
    let vectors_file = run.join(item_vectors::ITEM_VECTORS_FILE);
    kvrec_finetune::io::write_jsonl(&vectors_file, &vectors).unwrap();
    let config = TrainConfig {
        item_keys: Some(keys_file),
        item_vectors: Some(vectors_file),
        epochs: 4.0,
        ..sequence_config()
    };
    let corpus = train::Corpus::Sequences {
        sequences: &sequences,
        valid: &valid,
    };
    train::run_corpus(&config, corpus, &run, false, None, false).unwrap();

    // The key matrix is fixed; the keys' embeddings, started at zero, have learned.
    let (tokenizer, model) = export_and_load(&run, "item-keys");
    assert!(model.has_item_features());
    let saved = checkpoint::tensors(&run.join("checkpoint.safetensors")).unwrap();
    let classes =
        ItemClasses::new(&tokenizer, &config.template, config.number_tokens as i64).unwrap();
    let vocab = tokenizer.get_vocab_size(true);
    let FeatureColumns { matrix, names } = item_keys::matrix(&keys, &classes, vocab).unwrap();
    let FeatureColumns {
        matrix: text,
        names: text_names,
    } = item_vectors::matrix(&vectors, &classes, vocab).unwrap();
    assert_eq!(text_names.len(), 6);
    // The keys' columns, then the text's.
    let both = Tensor::cat(&[&matrix, &text], 1).unwrap();
    assert_eq!(max_diff(&both, &saved[model::ITEM_FEATURE_MATRIX]), 0.0);
    let text_row = |id: i64| -> Vec<f32> {
        text.get(classes.token(id).unwrap() as usize)
            .unwrap()
            .to_vec1()
            .unwrap()
    };
    assert_eq!(text_row(vectors[1].id), vectors[1].vector);
    assert!(text_row(keys[1].id).iter().all(|&x| x == 0.0));
    let several = keys
        .iter()
        .find(|k| k.keys.iter().filter(|k| k.starts_with("genre=")).count() == 2)
        .expect("the fixture has an item of two genres");
    let row: Vec<f32> = matrix
        .get(classes.token(several.id).unwrap() as usize)
        .unwrap()
        .to_vec1()
        .unwrap();
    for (name, weight) in names.iter().zip(&row) {
        let expected = if !several.keys.contains(name) {
            0.0
        } else if name.starts_with("genre=") {
            0.5
        } else {
            1.0
        };
        assert_eq!(*weight, expected, "{name} of item {}", several.id);
    }
    for name in [model::ITEM_FEATURE_INPUT, model::ITEM_FEATURE_OUTPUT] {
        let trained = saved[name].abs().unwrap().max_all().unwrap();
        assert!(trained.to_scalar::<f32>().unwrap() > 1e-3, "{name} trained");
    }

    // The GGUF holds the folded tables: llama.cpp ranks as candle's forward with keys does.
    let served = kvrec_llm::registry::get("item-keys").unwrap();
    for instance in valid.iter().take(4) {
        let request = instance.request().unwrap();
        let prompt = config.template.render_prompt(&request);
        let ours = same_tokens(&tokenizer, &served, &prompt);
        let (prompt_ids, prefixes) = scoring_inputs(&tokenizer, &config.template, &request, &ours);
        let expected = model.candidate_scores(&prompt_ids, &prefixes).unwrap();
        assert_scores_match(&ranked("item-keys", &request), &request, &expected);
    }

    // Keys are for the sequence stage of a model trained from scratch.
    let rows_run = scratch("item-keys-rows");
    let refused = format!(
        "{:#}",
        train::run(&config, &rows(), &rows_run, false, Some(1), false).unwrap_err()
    );
    assert!(refused.contains("--sequence-window"), "{refused}");
}
