//! Scores rankers on protocol requests and reports the paper's table.

use std::time::Instant;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use kvrec_core::options::{Mode, Options};

use crate::baselines::Scorer;
use crate::metrics::{Metrics, Outcome, Summary};
use crate::paired;
use crate::protocol::Instance;

/// One row of the results table.
#[derive(Debug, Clone, Serialize)]
pub struct EvalRow {
    pub method: String,
    #[serde(flatten)]
    pub summary: Summary,
    pub requests_per_s: f64,
    /// Each request's outcome, in the order of the instances (for paired comparisons).
    #[serde(skip)]
    pub outcomes: Vec<Outcome>,
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
        outcomes: metrics.outcomes,
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
        let ranking = kvrec_llm::rank(model, &request, &options, &kvrec_llm::Cancel::none())?;
        match &ranking.parsed {
            Some(parsed) => {
                metrics.add_generated(&parsed.ids, instance.positive, parsed.valid);
            }
            None => {
                let by_candidate = ranking.by_candidate(&request);
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
        outcomes: metrics.outcomes,
    })
}

/// The table in the layout of the paper's Tables 1–2 plus throughput.
pub fn markdown(rows: &[EvalRow]) -> String {
    crate::table::markdown(
        &[
            "method",
            "n",
            "HR@1",
            "HR@3",
            "HR@5",
            "NDCG@3",
            "NDCG@5",
            "ER",
            "requests/s",
        ],
        rows.iter().map(|r| {
            let s = &r.summary;
            vec![
                r.method.clone(),
                s.n.to_string(),
                format!("{:.4}", s.hr1),
                format!("{:.4}", s.hr3),
                format!("{:.4}", s.hr5),
                format!("{:.4}", s.ndcg3),
                format!("{:.4}", s.ndcg5),
                format!("{:.3}", s.error_rate),
                format!("{:.0}", r.requests_per_s),
            ]
        }),
    )
}

/// The last row (the method under test: the model when one is given) against every other on
/// the same requests, and every row's rank histogram.
pub fn paired_markdown(rows: &[EvalRow], seed: u64) -> String {
    let mut out = String::new();
    if let Some((last, others)) = rows.split_last() {
        out.push_str(&crate::table::markdown(
            &[
                "paired",
                "n",
                "ΔHR@1 [95 % CI]",
                "ΔNDCG@3 [95 % CI]",
                "wins / losses (HR@1)",
            ],
            others.iter().map(|other| {
                let p = paired::compare(&last.outcomes, &other.outcomes, seed);
                vec![
                    format!("{} − {}", last.method, other.method),
                    p.n.to_string(),
                    format!(
                        "{:+.4} [{:+.4}, {:+.4}]",
                        p.hr1_diff, p.hr1_ci.0, p.hr1_ci.1
                    ),
                    format!(
                        "{:+.4} [{:+.4}, {:+.4}]",
                        p.ndcg3_diff, p.ndcg3_ci.0, p.ndcg3_ci.1
                    ),
                    format!("{} / {}", p.wins, p.losses),
                ]
            }),
        ));
    }
    let ranks = rows
        .iter()
        .flat_map(|r| r.outcomes.iter())
        .map(|o| o.better + o.tied)
        .filter(|&r| r < 1000)
        .max()
        .unwrap_or(1);
    let numbers: Vec<String> = (1..=ranks).map(|r| r.to_string()).collect();
    let mut header = vec!["positive at rank"];
    header.extend(numbers.iter().map(String::as_str));
    out.push('\n');
    out.push_str(&crate::table::markdown(
        &header,
        rows.iter().map(|row| {
            let mut cells = vec![row.method.clone()];
            cells.extend(
                paired::rank_histogram(&row.outcomes, ranks)
                    .into_iter()
                    .map(|share| format!("{share:.3}")),
            );
            cells
        }),
    ));
    out
}

/// One line per request: user, positive and each method's expected rank of the positive
/// (empty where a generated answer left it out).
pub fn per_request_csv(rows: &[EvalRow], instances: &[Instance]) -> String {
    let mut out = String::from("user_id,positive");
    for row in rows {
        out.push(',');
        out.push_str(&row.method.replace(',', ";"));
    }
    out.push('\n');
    for (i, instance) in instances.iter().enumerate() {
        out.push_str(&format!("{},{}", instance.user_id, instance.positive));
        for row in rows {
            out.push(',');
            if let Some(rank) = row.outcomes.get(i).and_then(Outcome::expected_rank) {
                out.push_str(&format!("{rank}"));
            }
        }
        out.push('\n');
    }
    out
}
