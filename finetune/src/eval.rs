//! Scores rankers on protocol requests and reports the paper's table.

use std::time::Instant;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use kvrec_core::options::{Mode, Options};

use crate::baselines::Scorer;
use crate::metrics::{Metrics, Summary};
use crate::protocol::Instance;

/// One row of the results table.
#[derive(Debug, Clone, Serialize)]
pub struct EvalRow {
    pub method: String,
    #[serde(flatten)]
    pub summary: Summary,
    pub requests_per_s: f64,
}

pub fn progress(len: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} {bar:30} {pos}/{len} [{elapsed_precise} < {eta_precise}] {per_sec}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(what.to_string());
    bar
}

/// Runs `scorer` over every instance.
pub fn evaluate(scorer: &dyn Scorer, instances: &[Instance]) -> Result<EvalRow> {
    let bar = progress(instances.len(), &scorer.name());
    let start = Instant::now();
    let mut metrics = Metrics::default();
    for instance in instances {
        let request = instance
            .request()
            .with_context(|| format!("request of user {}", instance.user_id))?;
        let positive = request
            .candidates
            .iter()
            .position(|c| c.id == instance.positive)
            .with_context(|| {
                format!(
                    "user {}: positive {} is not a candidate",
                    instance.user_id, instance.positive
                )
            })?;
        metrics.add_scores(&scorer.scores(instance, &request), positive);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let seconds = start.elapsed().as_secs_f64();
    Ok(EvalRow {
        method: scorer.name(),
        summary: metrics.summary(),
        requests_per_s: instances.len() as f64 / seconds.max(1e-9),
    })
}

/// Runs a model through kvrec-llm's `rank`, the code `recommend()` runs: scoring mode ranks
/// every candidate (ER 0 by construction), generation mode parses the text (ER measured).
pub fn evaluate_model(
    model: &kvrec_llm::Model,
    instances: &[Instance],
    mode: Mode,
) -> Result<EvalRow> {
    let label = format!(
        "{} ({})",
        model.info.name,
        if mode == Mode::Score {
            "score"
        } else {
            "generate"
        }
    );
    let bar = progress(instances.len(), &label);
    let options = Options {
        mode: Some(mode),
        ..Options::default()
    };
    let start = Instant::now();
    let mut metrics = Metrics::default();
    for instance in instances {
        let request = instance.request()?;
        let ranking = kvrec_llm::rank(model, &request, &options)?;
        match &ranking.parsed {
            Some(parsed) => metrics.add_generated(&parsed.ids, instance.positive, parsed.valid),
            None => {
                let by_candidate: Vec<f64> = request
                    .candidates
                    .iter()
                    .map(|c| {
                        ranking
                            .ids
                            .iter()
                            .position(|&id| id == c.id)
                            .map_or(f64::NEG_INFINITY, |i| ranking.scores[i])
                    })
                    .collect();
                let positive = request
                    .candidates
                    .iter()
                    .position(|c| c.id == instance.positive)
                    .unwrap_or(0);
                metrics.add_scores(&by_candidate, positive);
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(EvalRow {
        method: label,
        summary: metrics.summary(),
        requests_per_s: instances.len() as f64 / start.elapsed().as_secs_f64().max(1e-9),
    })
}

/// The table in the layout of the paper's Tables 1–2 plus throughput.
pub fn markdown(rows: &[EvalRow]) -> String {
    let mut out = String::from(
        "| method | n | HR@1 | HR@3 | HR@5 | NDCG@3 | NDCG@5 | ER | requests/s |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let s = &r.summary;
        out.push_str(&format!(
            "| {} | {} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} | {:.3} | {:.0} |\n",
            r.method, s.n, s.hr1, s.hr3, s.hr5, s.ndcg3, s.ndcg5, s.error_rate, r.requests_per_s
        ));
    }
    out
}
