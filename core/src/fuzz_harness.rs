//! What the fuzz targets (fuzz/fuzz_targets) run, kept here so the regression corpus replays
//! through the same code in `cargo test` (core/tests/fuzz_regressions.rs). Each harness
//! splits its input into fields, runs the public entry points a SQL caller reaches, and
//! asserts the invariants that must hold for any input; a panic is a finding.

use crate::answer::parse_answer;
use crate::augment::{augment, Strategy};
use crate::options::{Options, CALL_OPTIONS};
use crate::request::Request;
use crate::template::TemplateSpec;

/// Splits `data` at 0xFF bytes into at most `n` fields, lossily decoded (invalid UTF-8 is
/// the SQL layer's to refuse; here the JSON and text paths get every byte pattern).
fn fields(data: &[u8], n: usize) -> Vec<String> {
    let mut out: Vec<String> = data
        .splitn(n, |&b| b == 0xFF)
        .map(|f| String::from_utf8_lossy(f).into_owned())
        .collect();
    out.resize(n, String::new());
    out
}

/// Request parsing, prompt rendering (default and option-given templates), options parsing
/// and every augmentation strategy.
pub fn request_prompt_augment(data: &[u8]) {
    let f = fields(data, 6);
    let _ = Options::parse(Some(&f[3]), CALL_OPTIONS);
    let Ok(request) = Request::from_json_texts(&f[0], &f[1], &f[2]) else {
        return;
    };
    let spec = TemplateSpec::default();
    let prompt = spec.render_prompt(&request);
    for candidate in &request.candidates {
        assert!(
            prompt.contains(&candidate.id.to_string()),
            "every candidate id is in the prompt"
        );
    }
    if let Ok(options) = Options::parse(Some(&f[3]), &["max_history", "template"]) {
        let _ = options.template_spec().render_prompt(&request);
    }
    let seed = f[5]
        .bytes()
        .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    let positive = request.candidates.first().map(|c| c.id);
    for name in [f[4].as_str(), "SC", "SO", "M1", "M2", "M3", "SC+SO", "SK"] {
        let Ok(strategy) = Strategy::parse(name) else {
            continue;
        };
        for copy in 0..3 {
            if let Ok(augmented) = augment(&request, positive, &strategy, seed, copy) {
                let mut before = request.candidate_ids();
                let mut after = augmented.request.candidate_ids();
                before.sort_unstable();
                after.sort_unstable();
                assert_eq!(before, after, "augmentation keeps the candidate set");
                let _ = spec.render_prompt(&augmented.request);
            }
        }
    }
}

/// The answer parser against a candidate list.
pub fn answer(data: &[u8]) {
    let f = fields(data, 2);
    let candidates: Vec<i64> = f[1]
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let parsed = parse_answer(&f[0], &candidates);
    assert!(
        parsed.ids.iter().all(|id| candidates.contains(id)),
        "ids are candidates"
    );
    let mut unique = parsed.ids.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), parsed.ids.len(), "ids are distinct");
    if parsed.valid {
        assert!(parsed.invalid.is_empty() && parsed.duplicates.is_empty());
    }
}
