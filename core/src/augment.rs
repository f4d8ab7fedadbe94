//! InstructMK data augmentation (paper §3), deterministic from a seed.
//!
//! - `SC` shuffles the candidate list in the input; the label stays the same.
//! - `SO` shuffles the answer's negatives; the positive stays first.
//! - `SK` shuffles key order: user keys among themselves, history keys among themselves.
//! - `mask:<k>` removes k key-value pairs, never the history titles or the candidates;
//!   `M1` = mask 3, `M2` = mask 4, `M3` = 3 and 4 in equal shares across copies.
//!
//! Strategies combine with `+` (e.g. `SC+SO`); `none` (alias `InstructMK`) is the identity.

use crate::answer::target_ids;
use crate::error::{KvrecError, Result};
use crate::request::{history_keys, KeyValue, Request};
use crate::rng::Rng;

/// The paper's enhanced : original ratio.
pub const DEFAULT_COPIES: usize = 4;
/// The history key a mask never removes ("always maintaining historical interactions").
const PROTECTED_HISTORY_KEY: &str = "title";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    ShuffleCandidates,
    ShuffleOutput,
    ShuffleKeys,
    /// Mask this many keys; several counts are shared out across copies (M3).
    Mask(Vec<usize>),
}

/// A parsed augmentation strategy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Strategy {
    name: String,
    steps: Vec<Step>,
}

impl Strategy {
    pub fn parse(text: &str) -> Result<Strategy> {
        let unknown = || KvrecError::UnknownStrategy {
            given: text.chars().take(64).collect(),
        };
        let mut steps = Vec::new();
        for part in text.split('+').map(str::trim) {
            let lower = part.to_ascii_lowercase();
            let step = match lower.as_str() {
                "none" | "instructmk" => continue,
                "sc" => Step::ShuffleCandidates,
                "so" => Step::ShuffleOutput,
                "sk" => Step::ShuffleKeys,
                "m1" => Step::Mask(vec![3]),
                "m2" => Step::Mask(vec![4]),
                "m3" => Step::Mask(vec![3, 4]),
                _ => match lower.strip_prefix("mask:").map(str::parse::<usize>) {
                    Some(Ok(k)) if k > 0 => Step::Mask(vec![k]),
                    _ => return Err(unknown()),
                },
            };
            steps.push(step);
        }
        Ok(Strategy {
            name: text.trim().to_string(),
            steps,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// True for `none`: copies would equal the original.
    pub fn is_identity(&self) -> bool {
        self.steps.is_empty()
    }

    /// True when the strategy changes the answer and so needs the positive.
    pub fn needs_positive(&self) -> bool {
        self.steps.contains(&Step::ShuffleOutput)
    }
}

/// One augmented copy: the changed request, its answer (when the positive is known) and the
/// keys a mask removed (as `user.<key>` / `history.<key>`).
#[derive(Debug, Clone, PartialEq)]
pub struct Augmented {
    pub request: Request,
    pub target: Option<Vec<i64>>,
    pub masked: Vec<String>,
}

/// Augments one copy. `copy` is 1-based for dataset copies, where M3 alternates its mask
/// sizes by copy (3, 4, 3, 4, …); `copy == 0` draws the size from the seed instead.
pub fn augment(
    request: &Request,
    positive: Option<i64>,
    strategy: &Strategy,
    seed: u64,
    copy: usize,
) -> Result<Augmented> {
    if strategy.needs_positive() && positive.is_none() {
        return Err(KvrecError::NeedsPositive {
            strategy: strategy.name.clone(),
        });
    }
    let mut rng = Rng::fork(seed, copy as u64);
    let mut out = Augmented {
        request: request.clone(),
        target: positive.map(|p| target_ids(request, p)).transpose()?,
        masked: Vec::new(),
    };
    for step in &strategy.steps {
        match step {
            Step::ShuffleCandidates => rng.shuffle(&mut out.request.candidates),
            Step::ShuffleOutput => {
                if let Some(target) = out.target.as_mut() {
                    rng.shuffle(&mut target[1..]);
                }
            }
            Step::ShuffleKeys => shuffle_keys(&mut out.request, &mut rng),
            Step::Mask(counts) => {
                let k = if copy == 0 {
                    counts[rng.below(counts.len())]
                } else {
                    counts[(copy - 1) % counts.len()]
                };
                out.masked.extend(mask_keys(&mut out.request, k, &mut rng));
            }
        }
    }
    Ok(out)
}

/// The original (copy 0, unchanged) followed by `copies` augmented copies: the paper's
/// "raw data plus enhanced data" at ratio 1:`copies`.
pub fn augment_dataset(
    request: &Request,
    positive: Option<i64>,
    strategy: &Strategy,
    seed: u64,
    copies: usize,
) -> Result<Vec<Augmented>> {
    let none = Strategy::parse("none")?;
    let mut out = vec![augment(request, positive, &none, seed, 0)?];
    for copy in 1..=copies {
        out.push(augment(request, positive, strategy, seed, copy)?);
    }
    Ok(out)
}

fn shuffle_keys(request: &mut Request, rng: &mut Rng) {
    rng.shuffle(&mut request.user);
    let mut order = history_keys(&request.history);
    rng.shuffle(&mut order);
    let rank = |kv: &KeyValue| {
        order
            .iter()
            .position(|k| k == &kv.key)
            .unwrap_or(usize::MAX)
    };
    for item in &mut request.history {
        item.fields.sort_by_key(rank);
    }
}

/// Removes `k` randomly chosen maskable keys (all of them if fewer exist).
fn mask_keys(request: &mut Request, k: usize, rng: &mut Rng) -> Vec<String> {
    let mut maskable: Vec<String> = request
        .user
        .iter()
        .map(|kv| format!("user.{}", kv.key))
        .chain(
            history_keys(&request.history)
                .into_iter()
                .filter(|key| key != PROTECTED_HISTORY_KEY)
                .map(|key| format!("history.{key}")),
        )
        .collect();
    rng.shuffle(&mut maskable);
    maskable.truncate(k);
    for name in &maskable {
        if let Some(key) = name.strip_prefix("user.") {
            request.user.retain(|kv| kv.key != key);
        } else if let Some(key) = name.strip_prefix("history.") {
            for item in &mut request.history {
                item.fields.retain(|kv| kv.key != key);
            }
        }
    }
    maskable
}
