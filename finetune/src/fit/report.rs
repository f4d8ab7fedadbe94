//! A fit's report (`report.md` with its pictures) and the lines the console prints: the
//! model beside popularity and tuned co-occurrence on the held-out users, which is better,
//! what to try when the model is not, and the SQL that serves it.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use serde::Serialize;

use super::prior::PriorChoice;
use super::shape::DataShape;
use super::{humanize, Source, CONFIG_FILE};
use crate::catalog_eval::{self, CatalogRow};
use crate::eval::{self, EvalRow};
use crate::paired::{self, Paired};
use crate::train::{plot, RunSummary, TrainConfig};

/// The model against tuned co-occurrence, paired on the held-out requests (HR@1, 95 %).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The interval lies above zero.
    Better,
    /// The interval holds zero: no difference that these requests can show.
    Level,
    /// The interval lies below zero.
    Worse,
}

impl Verdict {
    pub fn of(against: &Paired) -> Verdict {
        if against.hr1_ci.0 > 0.0 {
            Verdict::Better
        } else if against.hr1_ci.1 < 0.0 {
            Verdict::Worse
        } else {
            Verdict::Level
        }
    }
}

/// Everything a report states.
pub struct Facts<'a> {
    pub source: &'a Source,
    pub shape: &'a DataShape,
    pub config: &'a TrainConfig,
    pub summary: &'a RunSummary,
    /// Validation HR@1 per epoch.
    pub validation: &'a [(usize, f64)],
    /// The co-watch prior's weight and how it was chosen.
    pub prior: &'a PriorChoice,
    /// Popularity, co-occurrence, the model, on the protocol's candidates.
    pub rows: &'a [EvalRow],
    /// The same on the whole catalog.
    pub catalog: &'a [CatalogRow],
    /// The model minus co-occurrence.
    pub against: &'a Paired,
    pub verdict: Verdict,
    pub notes: &'a [String],
    pub model: &'a Path,
    pub name: &'a str,
    pub seconds: f64,
    pub budget: Duration,
    pub seed: u64,
}

/// The verdict as one sentence, with the figures behind it.
fn headline(facts: &Facts) -> String {
    let p = facts.against;
    let (model, cooc) = (&facts.rows[2].summary, &facts.rows[1].summary);
    let figures = format!(
        "HR@1 {:.3} against {:.3}, paired Δ {:+.3} [{:+.3}, {:+.3}] on {} held-out users",
        model.hr1, cooc.hr1, p.hr1_diff, p.hr1_ci.0, p.hr1_ci.1, p.n
    );
    match facts.verdict {
        Verdict::Better => format!("The model ranks better than tuned co-occurrence: {figures}."),
        Verdict::Level => format!(
            "The model is level with tuned co-occurrence, no better: {figures}. Co-occurrence is \
             the cheaper choice until a model beats it."
        ),
        Verdict::Worse => format!(
            "The model ranks WORSE than tuned co-occurrence: {figures}. Do not serve it in place \
             of co-occurrence."
        ),
    }
}

/// How the source lists events that share a time, when any do.
fn tie_order(s: &DataShape) -> String {
    if s.tie_share == 0.0 {
        return String::new();
    }
    let order = if s.ties_keep_order() {
        "in the order they happened"
    } else {
        "in an order that is not the order of events"
    };
    format!(
        ", listed {order} (tie-order agreement {:.2})",
        s.tie_order_agreement
    )
}

/// How the model's scores are combined with co-occurrence's, as one sentence.
fn prior_sentence(p: &PriorChoice) -> String {
    if p.weight == 0.0 {
        return format!(
            "The model serves alone: co-occurrence's scores added to its own at no weight ranked \
             the {} validation requests better (HR@1 {:.4}).",
            p.requests,
            p.hr1_at(0.0)
        );
    }
    format!(
        "The model serves with a co-watch prior: co-occurrence's scores, at its tuned settings, \
         added to its own at weight {}, the weight that ranked {} validation requests best \
         (HR@1 {:.4} alone, {:.4} with it). The model's rows below include it.",
        p.weight,
        p.requests,
        p.hr1_at(0.0),
        p.hr1_at(p.weight)
    )
}

/// What to try when the model does not win, from how the training ended.
fn advice(facts: &Facts) -> Vec<String> {
    let mut advice = Vec::new();
    if facts.verdict == Verdict::Better {
        return advice;
    }
    let last = facts.validation.last().map(|&(e, _)| e);
    let best = facts.summary.best.map(|(e, _)| e);
    if facts.summary.stopped_by == "deadline" && last.is_some() && best == last {
        advice.push(format!(
            "Validation was still improving when the {} budget ran out: fit again with a larger \
             --budget and --resume.",
            humanize(facts.budget)
        ));
    }
    if facts.shape.items_with_keys == 0 {
        advice.push(
            "Give the items keys (category, brand, genres) in the recipe's [items] query: items \
             that share a key share what is learnt about them."
                .into(),
        );
    }
    if facts.shape.items_with_vectors == 0 {
        advice.push(
            "Give the items titles and a text model (scripts/fetch_gemma.sh): rare items then \
             start from what their titles say."
                .into(),
        );
    }
    advice.push(format!(
        "Change the training options in {CONFIG_FILE} (width, dropout, window) and fit again \
         with --config {CONFIG_FILE}."
    ));
    advice
}

/// The two SQL statements that serve the model (SQLite, with the extension loaded).
fn sql(facts: &Facts) -> String {
    format!(
        "SELECT kvrec_load_model('{name}', '{path}');\n\
         SELECT * FROM recommend_topk_each('{name}', '{{}}', :history_json, 10);",
        name = facts.name,
        path = facts.model.display().to_string().replace('\'', "''"),
    )
}

/// The lines the console prints at the end of a fit.
pub fn console(facts: &Facts) -> String {
    let mut out = format!("\n{}\n", headline(facts));
    let (pop, model) = (&facts.catalog[0], &facts.catalog[2]);
    let cooc = &facts.catalog[1];
    out.push_str(&format!(
        "Whole catalog, HR@10: model {:.3}, co-occurrence {:.3}, popularity {:.3}.\n",
        model.hr_at_10, cooc.hr_at_10, pop.hr_at_10
    ));
    out.push_str(&format!("{}\n", prior_sentence(facts.prior)));
    for line in advice(facts) {
        out.push_str(&format!("- {line}\n"));
    }
    out.push_str(&format!(
        "\nModel: {}\nReport: the report.md beside it\nServe it from SQL (history_json: '[{{\"id\": ...}}, ...]', oldest first):\n{}\n",
        facts.model.display(),
        sql(facts)
    ));
    out
}

/// Writes the report and its pictures (`validation.png`, `ranks.png`) into `dir`.
pub fn write(facts: &Facts, dir: &Path, path: &Path) -> Result<()> {
    let hr1: Vec<f64> = facts.validation.iter().map(|&(_, h)| h).collect();
    plot::loss_png(&hr1, &dir.join("validation.png"))?;
    let ranks = 10;
    let histograms: Vec<Vec<f64>> = facts
        .rows
        .iter()
        .map(|r| paired::rank_histogram(&r.outcomes, ranks))
        .collect();
    plot::bars_png(&histograms, &dir.join("ranks.png"))?;
    crate::io::write_atomically(path, markdown(facts).as_bytes())
}

fn markdown(facts: &Facts) -> String {
    let s = facts.shape;
    let c = facts.config;
    let source = match facts.source {
        Source::Recipe(path) => format!("recipe `{}`", path.display()),
        Source::MovieLens(path) => format!("MovieLens folder `{}`", path.display()),
    };
    let mut out = format!("# Fit report: {}\n\n{}\n\n", facts.name, headline(facts));
    for line in advice(facts) {
        out.push_str(&format!("- {line}\n"));
    }
    out.push_str(&format!(
        "\n## Data\n\nFrom the {source}: {} users with a training sequence, {} items, {} training \
         events ({:.1} per item), 95 % of sequences at most {} items long, {:.0} % of consecutive \
         events tied in time{}; {} items with keys, {} with title vectors.\n",
        s.users,
        s.items,
        s.events,
        s.events_per_item(),
        s.p95_length,
        100.0 * s.tie_share,
        tie_order(s),
        s.items_with_keys,
        s.items_with_vectors
    ));
    for note in facts.notes {
        out.push_str(&format!("\n- {note}"));
    }
    let best = match facts.summary.best {
        Some((epoch, hr1)) => {
            format!("best validation HR@1 {hr1:.4} at epoch {epoch}, the epoch exported")
        }
        None => "no epoch ended within the budget, so the last weights are exported".into(),
    };
    out.push_str(&format!(
        "\n\n## Training\n\n{} × {} layers, {} heads, window {}, dropout {}, {} epochs at most, \
         patience {}, the target spread over {} items, seen items masked: {} (all options in \
         [{CONFIG_FILE}]({CONFIG_FILE})). {} parameters.\n\n\
         {} steps ({:.1} epochs) in {}, stopped by {}; {best}. Whole fit: {} of a {} \
         budget.\n\n\
         ![validation HR@1 per epoch](validation.png)\n",
        c.d_model,
        c.layers,
        c.heads,
        c.sequence_window,
        c.dropout,
        c.epochs,
        c.patience,
        c.targets.future_items.max(1),
        c.targets.mask_seen,
        facts.summary.parameters,
        facts.summary.steps,
        facts.summary.steps as f64 / facts.summary.steps_per_epoch.max(1) as f64,
        humanize(Duration::from_secs_f64(facts.summary.seconds)),
        facts.summary.stopped_by,
        humanize(Duration::from_secs_f64(facts.seconds)),
        humanize(facts.budget),
    ));
    out.push_str(&format!(
        "\n## Held-out users: the protocol's candidates\n\nEach held-out user's last item \
         among 9 items the user never had, ranked after the 20 items before it. \
         Co-occurrence's settings were tuned on the validation requests. {}\n\n{}\n{}",
        prior_sentence(facts.prior),
        eval::markdown(facts.rows),
        eval::paired_markdown(facts.rows, facts.seed)
    ));
    out.push_str(
        "\n![share of requests with the positive at each rank: popularity, co-occurrence, model](ranks.png)\n",
    );
    out.push_str(&format!(
        "\n## Held-out users: the whole catalog\n\nThe same users' last items among every item \
         they never had, as `recommend_topk` serves them.\n\n{}",
        catalog_eval::markdown(facts.catalog)
    ));
    out.push_str(&format!(
        "\n## Serve it\n\n```sql\n{}\n```\n\n`:history_json` is the user's items, oldest \
         first: `[{{\"id\": ...}}, ...]`.\n",
        sql(facts)
    ));
    out
}
