//! The backend on a tiny model the project writes itself.

use std::path::PathBuf;
use std::sync::Arc;

use kvrec_core::options::{Mode, Options};
use kvrec_core::{KvrecError, Request, TemplateSpec};
use kvrec_llm::{rank, registry, tiny};

fn tiny_model(name: &str, template: Option<&TemplateSpec>) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kvrec-llm-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.gguf"));
    tiny::write_tiny_llama(&path, 7, template).unwrap();
    path
}

fn request(n_candidates: i64, n_history: usize) -> Request {
    let history: Vec<_> = (0..n_history)
        .map(|i| serde_json::json!({"id": i, "title": format!("Movie number {i} (1995)"), "rating": 1 + i % 5, "genres": "Drama|War"}))
        .collect();
    let candidates: Vec<_> = (0..n_candidates)
        .map(|i| serde_json::json!({"id": 1000 + i * 37, "title": format!("C{i}")}))
        .collect();
    Request::from_values(
        &serde_json::json!({"gender": "female", "age": "25-34", "occupation": "writer"}),
        &serde_json::json!(history),
        &serde_json::json!(candidates),
    )
    .unwrap()
}

fn load(name: &str) -> Arc<kvrec_llm::Model> {
    let path = tiny_model(name, None);
    registry::load(name, path.to_str().unwrap(), &Options::default()).unwrap();
    registry::get(name).unwrap()
}

#[test]
fn scoring_ranks_every_candidate_once() {
    let model = load("score");
    for n in [1, 2, 10, 70, 100] {
        let r = request(n, 20);
        let ranking = rank(&model, &r, &Options::default(), &kvrec_llm::Cancel::none()).unwrap();
        let mut ids = ranking.ids.clone();
        ids.sort_unstable();
        let mut expected = r.candidate_ids();
        expected.sort_unstable();
        assert_eq!(ids, expected, "{n} candidates");
        assert!(
            ranking.scores.windows(2).all(|w| w[0] >= w[1]),
            "scores sorted"
        );
        assert!(ranking.scores.iter().all(|s| s.is_finite() && *s <= 0.0));
        let total: f64 = ranking.scores.iter().map(|s| s.exp()).sum();
        assert!(
            (total - 1.0).abs() < 1e-6,
            "scores are a distribution over the candidates: {total}"
        );
        if n <= 10 {
            assert_eq!(ranking.dropped_history, 0);
        }
        let again = rank(&model, &r, &Options::default(), &kvrec_llm::Cancel::none()).unwrap();
        assert_eq!(again, ranking, "deterministic");
    }
    registry::unload("score").unwrap();
}

/// Batching is an implementation detail: prompt chunks of 16 tokens and candidate batches of
/// at most 16 tokens must give the scores of one big batch. ggml picks other kernels for other
/// batch shapes (and rounds activations to F16 for the F16 output head), so logits, and the
/// scores made of their differences, agree to about 0.02, not bit for bit; the candidates'
/// scores spread over more than two units, so a mixed-up sequence or row would be off by far more.
#[test]
fn scores_do_not_depend_on_batching() {
    let path = tiny_model("batching", None);
    registry::load("batch-big", path.to_str().unwrap(), &Options::default()).unwrap();
    let small = Options {
        n_batch: Some(16),
        ..Options::default()
    };
    registry::load("batch-small", path.to_str().unwrap(), &small).unwrap();
    let r = request(70, 5);
    let big = rank(
        &registry::get("batch-big").unwrap(),
        &r,
        &Options::default(),
        &kvrec_llm::Cancel::none(),
    )
    .unwrap();
    let chunked = rank(
        &registry::get("batch-small").unwrap(),
        &r,
        &Options::default(),
        &kvrec_llm::Cancel::none(),
    )
    .unwrap();
    let by_id = |ranking: &kvrec_llm::Ranking| {
        let mut pairs: Vec<(i64, f64)> = ranking
            .ids
            .iter()
            .copied()
            .zip(ranking.scores.iter().copied())
            .collect();
        pairs.sort_by_key(|p| p.0);
        pairs
    };
    for ((id, a), (_, b)) in by_id(&big).into_iter().zip(by_id(&chunked)) {
        assert!((a - b).abs() <= 0.03, "candidate {id}: {a} vs {b}");
    }
    registry::unload("batch-big").unwrap();
    registry::unload("batch-small").unwrap();
}

#[test]
fn generation_returns_parsed_text() {
    let model = load("generate");
    let options = Options {
        mode: Some(Mode::Generate),
        ..Options::default()
    };
    let ranking = rank(&model, &request(5, 3), &options, &kvrec_llm::Cancel::none()).unwrap();
    let parsed = ranking.parsed.clone().unwrap();
    assert_eq!(parsed.ids, ranking.ids);
    assert!(ranking.generated.is_some());
    registry::unload("generate").unwrap();
}

#[test]
fn long_history_is_dropped_to_fit_the_context() {
    let path = tiny_model("small-ctx", None);
    let options = Options {
        n_ctx: Some(1024),
        ..Options::default()
    };
    registry::load("small-ctx", path.to_str().unwrap(), &options).unwrap();
    let model = registry::get("small-ctx").unwrap();
    let r = request(10, 20);
    let opts = Options::default();
    let ranking = rank(&model, &r, &opts, &kvrec_llm::Cancel::none()).unwrap();
    assert!(ranking.dropped_history > 0, "{ranking:?}");
    assert!(ranking.prompt_tokens <= 1024);
    let err = rank(&model, &request(300, 0), &opts, &kvrec_llm::Cancel::none()).unwrap_err();
    assert!(matches!(err, KvrecError::PromptTooLong { .. }), "{err}");
    registry::unload("small-ctx").unwrap();
}

#[test]
fn a_template_in_the_metadata_is_used() {
    let spec = TemplateSpec {
        instruction: "Rank.".into(),
        ..TemplateSpec::default()
    };
    let path = tiny_model("templated", Some(&spec));
    let info = registry::load("templated", path.to_str().unwrap(), &Options::default()).unwrap();
    assert_eq!(info.template_source, "model");
    assert_eq!(registry::get("templated").unwrap().template, spec);
    registry::unload("templated").unwrap();
}

#[test]
fn bad_files_are_errors() {
    let dir = std::env::temp_dir().join(format!("kvrec-llm-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let empty = dir.join("empty.gguf");
    std::fs::write(&empty, b"").unwrap();
    let text = dir.join("text.gguf");
    std::fs::write(&text, b"hello world").unwrap();
    let good = tiny_model("truncate-src", None);
    let bytes = std::fs::read(&good).unwrap();
    let truncated = dir.join("truncated.gguf");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let mut messages = Vec::new();
    for path in [dir.join("missing.gguf"), empty, text, truncated] {
        let err = registry::load("bad", path.to_str().unwrap(), &Options::default()).unwrap_err();
        messages.push(err.to_string());
    }
    for m in &messages {
        println!("{m}");
    }
    assert!(messages[0].contains("does not exist"));
    assert!(messages[1].contains("is empty"));
    assert!(messages[2].contains("not a GGUF"));
    assert!(
        messages[3].contains("llama.cpp could not load"),
        "{}",
        messages[3]
    );
    assert!(registry::get("bad").is_err());
}

/// Many requests per decode give each request the scores it gets alone, in order, and a
/// request that cannot be scored gets its own error without failing the others.
#[test]
fn batched_requests_score_as_they_do_alone() {
    let path = tiny_model("batched", None);
    let wide = Options {
        n_ctx: Some(1024),
        n_batch: Some(1024),
        ..Options::default()
    };
    registry::load("batched", path.to_str().unwrap(), &wide).unwrap();
    let model = registry::get("batched").unwrap();
    let requests = vec![
        request(10, 5),
        request(300, 0), // longer than the context even without history
        request(3, 2),
        request(2, 0),
        request(30, 0), // many sequences: fills a batch of its own
        request(12, 1),
    ];
    let results = kvrec_llm::rank_batch(
        &model,
        &requests,
        &Options::default(),
        &kvrec_llm::Cancel::none(),
    );
    assert_eq!(results.len(), requests.len());
    for (i, (request, result)) in requests.iter().zip(&results).enumerate() {
        if i == 1 {
            let err = result.as_ref().unwrap_err();
            assert!(matches!(err, KvrecError::PromptTooLong { .. }), "{err}");
            continue;
        }
        let batched = result.as_ref().unwrap();
        let alone = rank(
            &model,
            request,
            &Options::default(),
            &kvrec_llm::Cancel::none(),
        )
        .unwrap();
        assert_eq!(batched.prompt_tokens, alone.prompt_tokens, "request {i}");
        for (id, score) in alone.ids.iter().zip(&alone.scores) {
            let at = batched.ids.iter().position(|x| x == id).unwrap();
            assert!(
                (batched.scores[at] - score).abs() <= 0.03,
                "request {i} candidate {id}: {} vs {score}",
                batched.scores[at]
            );
        }
    }
    registry::unload("batched").unwrap();
}

#[test]
fn text_embeddings_are_one_vector_per_text_whatever_shares_their_batch() {
    let path = tiny_model("embed", None);
    let texts: Vec<String> = (0..40)
        .map(|i| format!("Movie number {i} (1995): Drama, War"))
        .collect();
    let all = kvrec_llm::embed::embed_texts(&path, &texts, 2).unwrap();
    assert_eq!(all.len(), 40, "more texts than one batch holds");
    assert!(all
        .iter()
        .all(|v| v.len() == 64 && v.iter().all(|x| x.is_finite())));
    let apart = all[5]
        .iter()
        .zip(&all[33])
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(apart > 0.05, "different texts, different vectors: {apart}");
    // The same text alone, or beside shorter texts in another order, reads the same (up to
    // the arithmetic of another batch size).
    let alone = kvrec_llm::embed::embed_texts(&path, &texts[33..34], 1).unwrap();
    let shuffled: Vec<String> = [&texts[5], &texts[33], &texts[5]]
        .map(Clone::clone)
        .to_vec();
    let beside = kvrec_llm::embed::embed_texts(&path, &shuffled, 1).unwrap();
    for (a, b) in [
        (&alone[0], &all[33]),
        (&beside[1], &all[33]),
        (&beside[0], &beside[2]),
    ] {
        let diff = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(diff < 2e-3, "{diff}");
    }
    let missing = kvrec_llm::embed::embed_texts(&path.with_extension("absent"), &texts, 1);
    assert!(
        matches!(missing, Err(KvrecError::ModelFile { .. })),
        "{missing:?}"
    );
}

#[test]
fn a_cancelled_call_stops_and_the_model_serves_the_next_one_alike() {
    let model = load("cancel");
    let r = request(70, 20);
    let expected = rank(&model, &r, &Options::default(), &kvrec_llm::Cancel::none()).unwrap();
    let generate = Options {
        mode: Some(Mode::Generate),
        ..Options::default()
    };
    for options in [Options::default(), generate] {
        // A limit that has passed before the first decode: nothing is decoded.
        let past = kvrec_llm::Cancel::new(Some(0), None);
        let err = rank(&model, &r, &options, &past).unwrap_err();
        assert_eq!(err, KvrecError::TimedOut { ms: 0 });
        let batch = kvrec_llm::rank_batch(&model, &[r.clone(), r.clone()], &options, &past);
        assert!(batch.iter().all(|b| b.is_err()), "{batch:?}");
        // The host's interrupt.
        let interrupted = || true;
        let host = kvrec_llm::Cancel::new(None, Some(&interrupted));
        let err = rank(&model, &r, &options, &host).unwrap_err();
        assert_eq!(err, KvrecError::Interrupted);
    }
    let again = rank(&model, &r, &Options::default(), &kvrec_llm::Cancel::none()).unwrap();
    assert_eq!(again, expected);
}

#[test]
fn generation_longer_than_the_token_cap_is_refused_before_any_work() {
    let model = load("generate-cap");
    let generate = Options {
        mode: Some(Mode::Generate),
        ..Options::default()
    };
    let cap = kvrec_llm::limits::get().max_generated_tokens;
    let err = rank(
        &model,
        &request(400, 5),
        &generate,
        &kvrec_llm::Cancel::none(),
    )
    .unwrap_err();
    assert!(
        matches!(err, KvrecError::OverCap { cap: "max_generated_tokens", limit, .. } if limit == cap as u64),
        "{err}"
    );
}

/// A fitted model carries the co-watch prior its fit chose; serving adds it to the model's
/// scores, for the candidates and the whole catalog alike, and the scores stay a distribution.
#[test]
fn a_co_watch_prior_in_the_model_moves_co_watched_items_up() {
    use std::collections::HashMap;

    use kvrec_core::cowatch::{CoWatchParams, CoWatchPrior};

    let dir = std::env::temp_dir().join(format!("kvrec-llm-prior-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let items: Vec<i64> = (1..=40).collect();
    let plain = dir.join("plain.gguf");
    tiny::write_tiny_catalog_llama(&plain, 5, &items, true, None).unwrap();
    let request = Request::from_values(
        &serde_json::json!({}),
        &serde_json::json!([{"id": 3}, {"id": 5}]),
        &serde_json::json!((20..30)
            .map(|id| serde_json::json!({"id": id}))
            .collect::<Vec<_>>()),
    )
    .unwrap();
    let none = kvrec_llm::Cancel::none();
    registry::load("prior-plain", plain.to_str().unwrap(), &Options::default()).unwrap();
    let model = registry::get("prior-plain").unwrap();
    let before = rank(&model, &request, &Options::default(), &none).unwrap();
    let catalog_before =
        kvrec_llm::rank_catalog(&model, &request, 40, &Options::default(), &none).unwrap();
    registry::unload("prior-plain").unwrap();
    // The candidate the model alone ranks last is the one the last watched item co-occurs with.
    let boosted = *before.ids.last().unwrap();
    let prior = CoWatchPrior::new(
        CoWatchParams::default(),
        5.0,
        HashMap::from([(5, vec![(boosted, 1000)])]),
        HashMap::from([(boosted, 1)]),
    );
    let with_prior = dir.join("prior.gguf");
    tiny::write_tiny_catalog_llama_with_prior(&with_prior, 5, &items, &prior).unwrap();
    registry::load("prior", with_prior.to_str().unwrap(), &Options::default()).unwrap();
    let model = registry::get("prior").unwrap();
    assert_eq!(
        model.prior.as_ref(),
        Some(&prior),
        "read back from the GGUF"
    );

    let after = rank(&model, &request, &Options::default(), &none).unwrap();
    assert_eq!(after.ids[0], boosted, "{before:?} → {after:?}");
    let total: f64 = after.scores.iter().map(|s| s.exp()).sum();
    assert!((total - 1.0).abs() < 1e-6, "a distribution: {total}");
    let others = |r: &kvrec_llm::Ranking| -> Vec<i64> {
        r.ids.iter().copied().filter(|&id| id != boosted).collect()
    };
    assert_eq!(
        others(&after),
        others(&before),
        "the others keep their order"
    );

    let catalog =
        kvrec_llm::rank_catalog(&model, &request, 40, &Options::default(), &none).unwrap();
    assert_eq!(catalog.ids[0], boosted, "{catalog_before:?} → {catalog:?}");
    assert_eq!(others(&catalog), others(&catalog_before));
    registry::unload("prior").unwrap();
}
