//! Training end to end on a tiny model: train → checkpoint → resume → export → llama.cpp,
//! with llama.cpp's candidate scores checked against the training-side forward.

use std::path::PathBuf;

use kvrec_core::options::Options;
use kvrec_core::template::TemplateSpec;
use kvrec_core::Request;
use kvrec_finetune::movielens;
use kvrec_finetune::protocol::{build, ProtocolConfig};
use kvrec_finetune::train::{self, bpe, checkpoint, model::Transformer, TrainConfig};
use kvrec_finetune::training_data::{self, TrainingRow};
use kvrec_llm::gguf::TensorType;
use kvrec_llm::llama_file::LlamaShape;
use kvrec_llm::trie::CandidateTrie;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kvrec-train-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn rows() -> Vec<TrainingRow> {
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/ml-tiny");
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
    let rows = rows();
    let mut config = tiny_config();
    config.epochs = 0.5;
    let run = scratch("export");
    train::run(&config, &rows, &run, false, None, false).unwrap();
    let gguf = run.join("model.gguf");
    train::export::export(&run, &gguf, TensorType::F32, "test").unwrap();

    let tokenizer = bpe::load(&run.join("tokenizer.json")).unwrap();
    let (weights, saved) = checkpoint::latest(&run).unwrap().unwrap();
    let shape = LlamaShape {
        n_vocab: tokenizer.get_vocab_size(true),
        ..saved.config.shape()
    };
    let (model, _): (Transformer, _) =
        checkpoint::load_model(&weights, shape, saved.config.tied).unwrap();

    kvrec_llm::registry::load("trained", gguf.to_str().unwrap(), &Options::default()).unwrap();
    let served = kvrec_llm::registry::get("trained").unwrap();
    assert_eq!(
        served.template, config.template,
        "template travels in the GGUF"
    );

    let request = Request::from_object(&rows[0].request).unwrap();
    let prompt = config.template.render_prompt(&request);
    let ours = bpe::encode(&tokenizer, &prompt).unwrap();
    let theirs: Vec<u32> = served
        .tokenize(&prompt, false)
        .iter()
        .map(|t| t.0 as u32)
        .collect();
    assert_eq!(
        ours, theirs,
        "llama.cpp tokenizes the prompt as tokenizers does"
    );

    let ranking = kvrec_llm::rank(&served, &request, &Options::default()).unwrap();
    let bos = bpe::token_id(&tokenizer, bpe::BOS).unwrap();
    let mut prompt_ids = vec![bos];
    prompt_ids.extend(&ours);
    // The same constrained scores from candle's log-probabilities at each branching node.
    let prefixes: Vec<Vec<i32>> = request
        .candidates
        .iter()
        .map(|c| {
            let ids = bpe::encode(&tokenizer, &config.template.answer_prefix(c.id)).unwrap();
            ids.iter().map(|&t| t as i32).collect()
        })
        .collect();
    let trie = CandidateTrie::new(&prefixes);
    assert!(
        !trie.to_decode().is_empty(),
        "the fixture's ids share leading digits, so nodes past the prompt are scored too"
    );
    let expected = trie.scores(|at, token| {
        let mut ids = prompt_ids.clone();
        if let Some(node) = at {
            ids.extend(
                trie.lineage(node)
                    .iter()
                    .map(|&n| trie.nodes[n].token as u32),
            );
        }
        let from = ids.len();
        ids.push(token as u32);
        model.continuation_logprob(&ids, from).unwrap()
    });
    for (id, score) in ranking.ids.iter().zip(&ranking.scores) {
        let at = request.candidates.iter().position(|c| c.id == *id).unwrap();
        let expected = expected[at];
        assert!(
            (expected - score).abs() < 1e-2 + 1e-3 * expected.abs(),
            "candidate {id}: candle {expected} vs llama.cpp {score}"
        );
    }
}
