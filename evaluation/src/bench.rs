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

/// What is timed: raw llama.cpp is the baseline the ratios are taken against. A model with a
/// catalog also times `recommend_topk`, which ranks all of it after the same history.
const PATHS: [&str; 4] = [
    "raw llama.cpp prompt pass",
    "kvrec rank() in process",
    "SQLite recommend()",
    "SQLite recommend_topk(k = 10), whole catalog",
];

/// Times raw prompt passes, in-process `rank`, and SQL `recommend()` on `instances`.
pub fn run(
    model_path: &Path,
    extension: &Path,
    instances: &[Instance],
    options_json: &str,
    batch_n_batch: u32,
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

    let db = open(extension)?;
    db.query_row(
        "SELECT kvrec_load_model('bench', ?1, ?2)",
        params![path, options_json],
        |_| Ok(()),
    )?;
    let mut stmt = db.prepare("SELECT recommend('bench', ?1, ?2, ?3)")?;
    let mut topk = db.prepare("SELECT recommend_topk('bench', ?1, ?2, 10)")?;
    let paths = if model.items.is_some() {
        PATHS.len()
    } else {
        PATHS.len() - 1
    };
    let texts: Vec<[String; 3]> = instances
        .iter()
        .map(|i| {
            [
                i.user.to_string(),
                i.history.to_string(),
                i.candidates.to_string(),
            ]
        })
        .collect();

    // One timed call of path `p` on request `i`; returns the prompt's token count for raw.
    let mut call_path = |p: usize, i: usize| -> Result<usize> {
        match p {
            0 => Ok(kvrec_llm::prompt_pass(
                &model,
                &requests[i],
                &call,
                &kvrec_llm::Cancel::none(),
            )?),
            1 => kvrec_llm::rank(&model, &requests[i], &call, &kvrec_llm::Cancel::none())
                .map(|_| 0)
                .map_err(Into::into),
            2 => {
                let [u, h, c] = &texts[i];
                stmt.query_row(params![u, h, c], |r| r.get::<_, String>(0))?;
                Ok(0)
            }
            _ => {
                let [u, h, _] = &texts[i];
                topk.query_row(params![u, h], |r| r.get::<_, String>(0))?;
                Ok(0)
            }
        }
    };
    // Warm up caches and the context pools on every path before timing.
    for p in 0..paths {
        call_path(p, 0)?;
    }
    // The paths take turns on each request, in rotating order, so that the machine's drift
    // (other load, frequency) reaches every path alike and the ratios stay comparable.
    let mut latencies = vec![Vec::with_capacity(requests.len()); paths];
    let mut tokens = 0;
    for i in 0..requests.len() {
        for turn in 0..paths {
            let p = (i + turn) % paths;
            let t = Instant::now();
            let n = call_path(p, i)?;
            latencies[p].push(t.elapsed().as_secs_f64());
            tokens += n;
        }
    }
    drop(stmt);
    drop(topk);
    let mut rows: Vec<BenchRow> = PATHS
        .iter()
        .zip(&mut latencies)
        .map(|(name, l)| {
            let total = l.iter().sum();
            row(name, l, tokens, total)
        })
        .collect();
    // Callers on connections of their own, one and then several, taking turns for a few
    // rounds so that drift reaches both: the ratio of their requests/s is how calls scale
    // on the model's context pool.
    let mut timed = [(Vec::new(), 0.0), (Vec::new(), 0.0)];
    for _ in 0..ROUNDS {
        for (slot, n) in [1, CALLERS].into_iter().enumerate() {
            let (latencies, wall) = callers(extension, &texts, n)?;
            timed[slot].0.extend(latencies);
            timed[slot].1 += wall;
        }
    }
    for ((mut latencies, wall), n) in timed.into_iter().zip([1, CALLERS]) {
        let caller = if n == 1 { "caller" } else { "callers" };
        let name = format!("SQLite recommend(), {n} {caller} at once");
        rows.push(row(&name, &mut latencies, 0, wall));
    }
    rows.extend(batched(
        path,
        &model,
        &requests,
        options_json,
        batch_n_batch,
    )?);
    kvrec_llm::registry::unload("bench")?;
    Ok(rows)
}

fn open(extension: &Path) -> Result<Connection> {
    let db = Connection::open_in_memory()?;
    // SAFETY: loading our own extension, built from this workspace.
    unsafe {
        db.load_extension_enable()?;
        db.load_extension(extension, None::<&str>)
            .with_context(|| format!("loading {}", extension.display()))?;
        db.load_extension_disable()?;
    }
    Ok(db)
}

/// Concurrent callers of the scaling row, as a server's worker threads would be.
pub const CALLERS: usize = 4;
/// Turns of one caller and of `CALLERS` callers over all the requests.
const ROUNDS: usize = 5;

/// SQLite `recommend()` from `n` threads at once, each on its own connection to the loaded
/// "bench" model, the requests dealt out between them: each call's latency, and the wall
/// time of all of them.
fn callers(extension: &Path, texts: &[[String; 3]], n: usize) -> Result<(Vec<f64>, f64)> {
    let connections = (0..n)
        .map(|_| open(extension))
        .collect::<Result<Vec<_>>>()?;
    let start = Instant::now();
    let latencies = std::thread::scope(|s| {
        let threads: Vec<_> = connections
            .into_iter()
            .enumerate()
            .map(|(k, db)| {
                s.spawn(move || -> Result<Vec<f64>> {
                    let mut stmt = db.prepare("SELECT recommend('bench', ?1, ?2, ?3)")?;
                    let mut own = Vec::new();
                    for [u, h, c] in texts.iter().skip(k).step_by(n) {
                        let t = Instant::now();
                        stmt.query_row(params![u, h, c], |r| r.get::<_, String>(0))?;
                        own.push(t.elapsed().as_secs_f64());
                    }
                    Ok(own)
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().expect("a bench caller panicked"))
            .collect::<Result<Vec<_>>>()
    })?;
    let wall = start.elapsed().as_secs_f64();
    Ok((latencies.into_iter().flatten().collect(), wall))
}

/// Requests/s of `CALLERS` callers at once over one caller, from the rows of one run.
pub fn scaling(rows: &[BenchRow]) -> Option<f64> {
    let rate = |n: usize| {
        rows.iter()
            .find(|r| {
                r.path
                    .starts_with(&format!("SQLite recommend(), {n} caller"))
            })
            .map(|r| r.requests_per_s)
    };
    Some(rate(CALLERS)? / rate(1)?)
}

/// Requests a batched call takes at once, like a DuckDB chunk would hand over.
const BLOCK: usize = 50;

/// Many requests per decode (`rank_batch`, contexts with a batch big enough for several
/// prompts) against one at a time (`rank`), taking turns block by block.
fn batched(
    path: &str,
    model: &kvrec_llm::Model,
    requests: &[kvrec_core::Request],
    options_json: &str,
    n_batch: u32,
) -> Result<Vec<BenchRow>> {
    let mut options: serde_json::Value = serde_json::from_str(options_json)?;
    options["n_batch"] = n_batch.into();
    options["n_ctx"] = n_batch.max(model.load.n_ctx).into();
    let options = Options::parse(
        Some(&options.to_string()),
        kvrec_core::options::LOAD_OPTIONS,
    )?;
    kvrec_llm::registry::load("bench-batched", path, &options)?;
    let wide = kvrec_llm::registry::get("bench-batched")?;
    let call = Options::default();
    let mut single = Vec::new();
    let mut blocks = Vec::new();
    for block in requests.chunks(BLOCK) {
        let t = Instant::now();
        for r in kvrec_llm::rank_batch(&wide, block, &call, &kvrec_llm::Cancel::none()) {
            r?;
        }
        blocks.push(t.elapsed().as_secs_f64() / block.len() as f64);
        for request in block {
            let t = Instant::now();
            kvrec_llm::rank(model, request, &call, &kvrec_llm::Cancel::none())?;
            single.push(t.elapsed().as_secs_f64());
        }
    }
    kvrec_llm::registry::unload("bench-batched")?;
    let total_single: f64 = single.iter().sum();
    let total_blocks: f64 = blocks.iter().map(|b| b * BLOCK as f64).sum();
    Ok(vec![
        row(
            "rank() one at a time (block turns)",
            &mut single,
            0,
            total_single,
        ),
        BenchRow {
            path: format!("rank_batch() {BLOCK} per call, n_batch {n_batch}"),
            requests: requests.len(),
            requests_per_s: requests.len() as f64 / total_blocks,
            prompt_tokens_per_s: 0.0,
            p50_ms: f64::NAN,
            p95_ms: f64::NAN,
        },
    ])
}

pub fn markdown(rows: &[BenchRow]) -> String {
    let base = rows[0].requests_per_s;
    crate::table::markdown(
        &[
            "path",
            "requests",
            "requests/s",
            "prompt tokens/s",
            "p50 ms",
            "p95 ms",
            "vs raw",
        ],
        rows.iter().map(|r| {
            vec![
                r.path.clone(),
                r.requests.to_string(),
                format!("{:.1}", r.requests_per_s),
                format!("{:.0}", r.prompt_tokens_per_s),
                format!("{:.1}", r.p50_ms),
                format!("{:.1}", r.p95_ms),
                format!("{:.2}", r.requests_per_s / base),
            ]
        }),
    )
}
