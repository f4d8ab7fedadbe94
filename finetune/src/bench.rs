//! `bench`: requests/s of `recommend()` through SQLite against raw llama.cpp prompt passes over
//! the same prompts, same model, same process — the ratio is the cost of everything kvrec adds.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use kvrec_core::options::Options;
use rusqlite::{params, Connection};
use serde::Serialize;

use crate::protocol::Instance;

#[derive(Debug, Clone, Serialize)]
pub struct BenchRow {
    pub path: String,
    pub requests: usize,
    pub requests_per_s: f64,
    pub prompt_tokens_per_s: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
}

fn row(path: &str, latencies: &mut [f64], tokens: usize, total: f64) -> BenchRow {
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q).round() as usize] * 1e3;
    BenchRow {
        path: path.into(),
        requests: latencies.len(),
        requests_per_s: latencies.len() as f64 / total,
        prompt_tokens_per_s: tokens as f64 / total,
        p50_ms: at(0.5),
        p95_ms: at(0.95),
    }
}

/// Times raw prompt passes, in-process `rank`, and SQL `recommend()` on `instances`.
pub fn run(
    model_path: &Path,
    extension: &Path,
    instances: &[Instance],
    options_json: &str,
) -> Result<Vec<BenchRow>> {
    let options = Options::parse(Some(options_json), kvrec_core::options::LOAD_OPTIONS)?;
    let path = model_path.to_str().context("model path is not UTF-8")?;
    kvrec_llm::registry::load("bench", path, &options)?;
    let model = kvrec_llm::registry::get("bench")?;
    let requests = instances
        .iter()
        .map(Instance::request)
        .collect::<kvrec_core::Result<Vec<_>>>()?;
    let call = Options::default();

    // Warm up caches and the context pool on every path before timing.
    kvrec_llm::prompt_pass(&model, &requests[0], &call)?;
    let mut rows = Vec::new();

    let (mut latencies, mut tokens, start) = (Vec::new(), 0, Instant::now());
    for request in &requests {
        let t = Instant::now();
        tokens += kvrec_llm::prompt_pass(&model, request, &call)?;
        latencies.push(t.elapsed().as_secs_f64());
    }
    let raw_total = start.elapsed().as_secs_f64();
    rows.push(row(
        "raw llama.cpp prompt pass",
        &mut latencies,
        tokens,
        raw_total,
    ));

    let (mut latencies, start) = (Vec::new(), Instant::now());
    for request in &requests {
        let t = Instant::now();
        kvrec_llm::rank(&model, request, &call)?;
        latencies.push(t.elapsed().as_secs_f64());
    }
    rows.push(row(
        "kvrec rank() in process",
        &mut latencies,
        tokens,
        start.elapsed().as_secs_f64(),
    ));

    let db = Connection::open_in_memory()?;
    // SAFETY: loading our own extension, built from this workspace.
    unsafe {
        db.load_extension_enable()?;
        db.load_extension(extension, None::<&str>)
            .with_context(|| format!("loading {}", extension.display()))?;
        db.load_extension_disable()?;
    }
    db.query_row(
        "SELECT kvrec_load_model('bench', ?1, ?2)",
        params![path, options_json],
        |_| Ok(()),
    )?;
    let mut stmt = db.prepare("SELECT recommend('bench', ?1, ?2, ?3)")?;
    let texts: Vec<(String, String, String)> = instances
        .iter()
        .map(|i| {
            (
                i.user.to_string(),
                i.history.to_string(),
                i.candidates.to_string(),
            )
        })
        .collect();
    stmt.query_row(params![texts[0].0, texts[0].1, texts[0].2], |_| Ok(()))?;
    let (mut latencies, start) = (Vec::new(), Instant::now());
    for (u, h, c) in &texts {
        let t = Instant::now();
        stmt.query_row(params![u, h, c], |r| r.get::<_, String>(0))?;
        latencies.push(t.elapsed().as_secs_f64());
    }
    rows.push(row(
        "SQLite recommend()",
        &mut latencies,
        tokens,
        start.elapsed().as_secs_f64(),
    ));
    kvrec_llm::registry::unload("bench")?;
    Ok(rows)
}

pub fn markdown(rows: &[BenchRow]) -> String {
    let base = rows[0].requests_per_s;
    let mut out = String::from("| path | requests | requests/s | prompt tokens/s | p50 ms | p95 ms | vs raw |\n|---|---|---|---|---|---|---|\n");
    for r in rows {
        out.push_str(&format!(
            "| {} | {} | {:.1} | {:.0} | {:.1} | {:.1} | {:.2} |\n",
            r.path,
            r.requests,
            r.requests_per_s,
            r.prompt_tokens_per_s,
            r.p50_ms,
            r.p95_ms,
            r.requests_per_s / base
        ));
    }
    out
}
