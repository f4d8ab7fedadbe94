//! The shipped default model (`models/kvrec-default.gguf`): the file is the one its model card
//! describes, and served through kvrec-llm's `rank()` — what `recommend()` runs — it still
//! scores the card's figures on the paper's protocol (file-order ties, the rule it was trained
//! under), above tuned co-occurrence and popularity on the same requests.

use kvrec_test_support as common;

use std::path::PathBuf;
use std::process::Command;

use kvrec_core::options::{Mode, Options};
use kvrec_evaluation::baselines::{CoOccurrenceScorer, PopularityScorer};
use kvrec_evaluation::cowatch::CoWatchParams;
use kvrec_evaluation::eval::{evaluate, evaluate_model};
use kvrec_evaluation::movielens;
use kvrec_evaluation::protocol::{build, ProtocolConfig, TieOrder};

/// HR@1 and NDCG@3 of the default model on the first 300 test users of ML-1M-head2999, as
/// the model card reports them (scoring is deterministic, so only a changed model or a
/// changed serving path moves them).
const CARD_HR1_300: f64 = 0.7700;
const CARD_NDCG3_300: f64 = 0.8548;

fn model_path() -> PathBuf {
    common::repo_root().join("models/kvrec-default.gguf")
}

#[test]
fn the_model_card_states_the_shipped_file_s_sha256() {
    let out = Command::new("sha256sum")
        .arg(model_path())
        .output()
        .expect("sha256sum runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let digest = String::from_utf8(out.stdout).unwrap();
    let digest = digest.split_whitespace().next().unwrap();
    let card = std::fs::read_to_string(common::repo_root().join("models/README.md")).unwrap();
    assert!(
        card.contains(digest),
        "models/README.md does not state sha256 {digest} of models/kvrec-default.gguf"
    );
}

#[test]
fn the_default_model_scores_its_card_figures_above_popularity() {
    let Some(dir) = common::shared_data("ml-1m-head2999") else {
        return;
    };
    let data = build(
        &movielens::read(&dir).unwrap(),
        &ProtocolConfig {
            tie_order: TieOrder::File,
            ..ProtocolConfig::default()
        },
    );
    let test = &data.test[..300];
    let model = kvrec_llm::Model::load(
        "default",
        model_path().to_str().unwrap(),
        &Options::default(),
    )
    .unwrap();
    let row = evaluate_model(&model, test, Mode::Score).unwrap();
    let s = row.summary;
    assert_eq!(s.error_rate, 0.0);
    assert!(
        (s.hr1 - CARD_HR1_300).abs() < 0.004 && (s.ndcg3 - CARD_NDCG3_300).abs() < 0.004,
        "HR@1 {:.4}, NDCG@3 {:.4} on 300 users; the card says {CARD_HR1_300}, {CARD_NDCG3_300}",
        s.hr1,
        s.ndcg3
    );
    let co_occurrence = CoOccurrenceScorer::new(&data.train_sequences, CoWatchParams::default());
    let co_occurrence = evaluate(&co_occurrence, test).unwrap().summary;
    assert!(
        s.hr1 > co_occurrence.hr1 && s.ndcg3 > co_occurrence.ndcg3,
        "the model ({:.4} / {:.4}) is not above tuned co-occurrence ({:.4} / {:.4})",
        s.hr1,
        s.ndcg3,
        co_occurrence.hr1,
        co_occurrence.ndcg3
    );
    // Its catalog: recommend_topk's code ranks unseen movies of the training sequences.
    assert_eq!(model.info.n_items, 3266);
    let catalog: std::collections::HashSet<i64> = data
        .train_sequences
        .iter()
        .flat_map(|s| s.items.iter().copied())
        .collect();
    for instance in &test[..20] {
        let mut request = instance.request().unwrap();
        request.candidates.clear();
        let seen: Vec<i64> = request.history.iter().filter_map(|h| h.id).collect();
        let top = kvrec_llm::rank_catalog(
            &model,
            &request,
            10,
            &Options::default(),
            &kvrec_llm::Cancel::none(),
        )
        .unwrap();
        assert_eq!(top.ids.len(), 10);
        assert!(top
            .ids
            .iter()
            .all(|id| catalog.contains(id) && !seen.contains(id)));
        let distinct: std::collections::HashSet<_> = top.ids.iter().collect();
        assert_eq!(distinct.len(), 10);
    }
    let popularity = evaluate(&PopularityScorer::new(&data.train_sequences), test).unwrap();
    assert!(
        s.hr1 > popularity.summary.hr1 + 0.1 && s.ndcg3 > popularity.summary.ndcg3 + 0.1,
        "the model ({:.4} / {:.4}) is not clearly above popularity ({:.4} / {:.4})",
        s.hr1,
        s.ndcg3,
        popularity.summary.hr1,
        popularity.summary.ndcg3
    );
}
