//! The paper's protocol as data (InstructMK §4, following SASRec's preprocessing):
//! 5-core filter, time order, leave-one-out (train target = second-to-last item, test target =
//! last), up to 20 history items, a positive plus 9 negatives drawn uniformly from items the
//! user never rated, shuffled; a seeded sample of test users.

use std::collections::{HashMap, HashSet};

use kvrec_core::rng::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::cowatch::{CoWatch, CoWatchParams};
pub use crate::interactions::Sequence;
use crate::interactions::{Interactions, Item};
use crate::movielens::Dataset;

/// Every knob of the protocol; the defaults are the paper's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProtocolConfig {
    pub seed: u64,
    /// Users and items with fewer interactions are dropped (one pass, as SASRec does).
    pub min_interactions: usize,
    pub max_history: usize,
    pub candidates: usize,
    pub test_users: usize,
    /// Extra candidate keys rendered next to each title: `genres`, `year`, `popularity`,
    /// `co_watch` (see [`crate::cowatch`]) and `co_watch_rank` (1 = highest `co_watch` among
    /// the request's candidates).
    pub candidate_keys: Vec<String>,
    /// Training requests per user: targets at the second-to-last item, then the ones before
    /// it (1 is the paper's leave-one-out).
    #[serde(default = "one")]
    pub train_targets: usize,
    /// How ratings in the same second are ordered (see [`TieOrder`]).
    #[serde(default)]
    pub tie_order: TieOrder,
}

/// The order of a user's ratings that share a timestamp. ML-1M stores seconds and rates in
/// bursts: 42 % of last items share their second with the item before. Ordering such ties by
/// movie id (SASRec's preprocessing, and this protocol's first rule) makes "the candidate id
/// just above the last history id" a cue no real request carries; `file` keeps the order of
/// the ratings file within a second instead. Results are reported under both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum TieOrder {
    #[default]
    MovieId,
    File,
}

fn one() -> usize {
    1
}

impl Default for ProtocolConfig {
    fn default() -> Self {
        ProtocolConfig {
            seed: 42,
            min_interactions: 5,
            max_history: 20,
            candidates: 10,
            test_users: 1000,
            candidate_keys: Vec::new(),
            train_targets: 1,
            tie_order: TieOrder::MovieId,
        }
    }
}

/// Which held-out item an instance predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Test,
}

/// One self-contained request with its known positive: a line of the JSONL files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    pub user_id: i64,
    pub split: Split,
    pub user: Value,
    pub history: Value,
    pub candidates: Value,
    pub positive: i64,
}

/// Everything `data` writes.
#[derive(Debug, Clone)]
pub struct ProtocolData {
    pub train: Vec<Instance>,
    pub test: Vec<Instance>,
    /// Each user's sequence without its test target: all a model may learn from.
    pub train_sequences: Vec<Sequence>,
}

/// Each user's `(item, rating)` pairs in time order, users ascending.
pub type UserSequences = Vec<(i64, Vec<(i64, Option<i64>)>)>;

/// Applies the 5-core filter and returns each remaining user's items in time order, ties in
/// time ordered by `ties` (movie id is what `sql/requests.sql` does).
pub fn sequences(data: &Dataset, min_interactions: usize, ties: TieOrder) -> UserSequences {
    event_sequences(&Interactions::from(data), min_interactions, ties)
}

/// [`sequences`] of any [`Interactions`]: each user's `(item, rating)` in time order.
pub fn event_sequences(
    data: &Interactions,
    min_interactions: usize,
    ties: TieOrder,
) -> UserSequences {
    untimed(&timed_sequences(data, min_interactions, ties))
}

/// Each user's `(item, rating)` of timed sequences.
fn untimed(timed: &TimedSequences) -> UserSequences {
    timed
        .iter()
        .map(|(user, items)| (*user, items.iter().map(|&(m, r, _)| (m, r)).collect()))
        .collect()
}

/// Each user's `(item, rating, time)` in time order, users ascending.
type TimedSequences = Vec<(i64, Vec<(i64, Option<i64>, i64)>)>;

/// [`event_sequences`] with each item's time.
fn timed_sequences(data: &Interactions, min_interactions: usize, ties: TieOrder) -> TimedSequences {
    let mut per_user: HashMap<i64, usize> = HashMap::new();
    let mut per_item: HashMap<i64, usize> = HashMap::new();
    for e in &data.events {
        *per_user.entry(e.user).or_default() += 1;
        *per_item.entry(e.item).or_default() += 1;
    }
    let mut by_user: HashMap<i64, Vec<(i64, i64, Option<i64>)>> = HashMap::new();
    for e in &data.events {
        if per_user[&e.user] >= min_interactions && per_item[&e.item] >= min_interactions {
            by_user
                .entry(e.user)
                .or_default()
                .push((e.time, e.item, e.rating));
        }
    }
    let mut out: TimedSequences = by_user
        .into_iter()
        .map(|(user, mut items)| {
            match ties {
                TieOrder::MovieId => items.sort_unstable(),
                // Stable: the file's order survives within a second.
                TieOrder::File => items.sort_by_key(|&(ts, _, _)| ts),
            }
            (
                user,
                items
                    .into_iter()
                    .map(|(ts, m, rating)| (m, rating, ts))
                    .collect(),
            )
        })
        .collect();
    out.sort_unstable_by_key(|(user, _)| *user);
    out
}

/// Builds the train and test instances and the training sequences of a MovieLens data set.
pub fn build(data: &Dataset, config: &ProtocolConfig) -> ProtocolData {
    build_from(&Interactions::from(data), config)
}

/// Builds the train and test instances and the training sequences.
pub fn build_from(data: &Interactions, config: &ProtocolConfig) -> ProtocolData {
    let movies: HashMap<i64, &Item> = data.items.iter().map(|(id, m)| (*id, m)).collect();
    let timed = timed_sequences(data, config.min_interactions, config.tie_order);
    let sequences = untimed(&timed);
    let mut universe: Vec<i64> = sequences
        .iter()
        .flat_map(|(_, items)| items.iter().map(|(m, _)| *m))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    universe.sort_unstable();

    let train_sequences: Vec<Sequence> = timed
        .iter()
        .map(|(user_id, items)| {
            let kept = &items[..items.len() - 1];
            Sequence {
                user_id: *user_id,
                items: kept.iter().map(|&(m, _, _)| m).collect(),
                times: kept.iter().map(|&(_, _, ts)| ts).collect(),
            }
        })
        .collect();
    let popularity = popularity(&train_sequences);

    let eligible: Vec<_> = sequences
        .iter()
        .filter(|(_, items)| items.len() >= 3)
        .collect();
    let mut test_order: Vec<i64> = eligible.iter().map(|(u, _)| *u).collect();
    Rng::new(config.seed).shuffle(&mut test_order);
    let test_users: HashSet<i64> = test_order.into_iter().take(config.test_users).collect();

    let wants_co_watch = config
        .candidate_keys
        .iter()
        .any(|k| k == "co_watch" || k == "co_watch_rank");
    let co_watch = CoWatch::new(&train_sequences, CoWatchParams::default().window);
    let own_sequences: HashMap<i64, Vec<i64>> = train_sequences
        .iter()
        .map(|s| (s.user_id, s.items.clone()))
        .collect();
    let keys = CandidateKeys {
        movies: &movies,
        popularity: &popularity,
        co_watch: &co_watch,
        wanted: &config.candidate_keys,
    };
    let mut out = ProtocolData {
        train: Vec::new(),
        test: Vec::new(),
        train_sequences,
    };
    for (user_id, items) in eligible {
        let user = data
            .users
            .get(user_id)
            .map_or_else(|| json!({}), |keys| Value::Object(keys.clone()));
        let rated: HashSet<i64> = items.iter().map(|(m, _)| *m).collect();
        // Only the co-watch keys read the user's own pair counts.
        let own = own_sequences
            .get(user_id)
            .filter(|_| wants_co_watch)
            .map(|items| CoWatch::of_sequence(items, co_watch.window));
        let train_targets = (0..config.train_targets.max(1))
            .map_while(|back| (items.len() - 2).checked_sub(back))
            .filter(|&index| index > 0)
            .map(|index| (Split::Train, index));
        for (split, target_index) in
            train_targets.chain(std::iter::once((Split::Test, items.len() - 1)))
        {
            if split == Split::Test && !test_users.contains(user_id) {
                continue;
            }
            let salt = match split {
                Split::Train => 0x7472_6169_6e00_0000,
                Split::Test => 0x7465_7374_0000_0000,
            };
            // The paper's one target per user keeps its stream; earlier targets get their own.
            let back = (items.len() - 2).saturating_sub(target_index) as u64;
            let stream = if split == Split::Train && back > 0 {
                (*user_id as u64) ^ (back << 40)
            } else {
                *user_id as u64
            };
            let mut rng = Rng::fork(config.seed ^ salt, stream);
            let positive = items[target_index].0;
            let start = target_index.saturating_sub(config.max_history);
            let history: Vec<Value> = items[start..target_index]
                .iter()
                .map(|(m, rating)| Item::history_json(movies.get(m).copied(), *m, *rating))
                .collect();
            let history_ids: Vec<i64> =
                items[start..target_index].iter().map(|(m, _)| *m).collect();
            let mut candidate_ids = vec![positive];
            candidate_ids.extend(sample_negatives(
                &universe,
                &rated,
                config.candidates.saturating_sub(1),
                &mut rng,
            ));
            rng.shuffle(&mut candidate_ids);
            let instance = Instance {
                user_id: *user_id,
                split,
                user: user.clone(),
                history: Value::Array(history),
                candidates: keys.candidates_json(&candidate_ids, &history_ids, own.as_ref()),
                positive,
            };
            match split {
                Split::Train => out.train.push(instance),
                Split::Test => out.test.push(instance),
            }
        }
    }
    out
}

/// Interaction counts per item over the training sequences.
pub fn popularity(sequences: &[Sequence]) -> HashMap<i64, usize> {
    let mut counts = HashMap::new();
    for s in sequences {
        for &item in &s.items {
            *counts.entry(item).or_default() += 1;
        }
    }
    counts
}

/// `k` distinct items from `universe` the user never rated, uniformly (rejection sampling;
/// a user has rated a small share of the items, so this ends quickly).
fn sample_negatives(universe: &[i64], rated: &HashSet<i64>, k: usize, rng: &mut Rng) -> Vec<i64> {
    let available = universe.iter().filter(|m| !rated.contains(m)).count();
    draw_unrated(universe, rated, k.min(available), rng)
}

/// `k` distinct items of `universe` outside `rated`, each drawn uniformly: how a request's
/// negatives are drawn, and so how training draws them too. The caller makes sure that
/// `universe` holds `k` such items (the loop would not end otherwise).
pub fn draw_unrated<T: Copy + Eq + std::hash::Hash>(
    universe: &[T],
    rated: &HashSet<T>,
    k: usize,
    rng: &mut Rng,
) -> Vec<T> {
    let mut chosen = Vec::with_capacity(k);
    while chosen.len() < k {
        let item = universe[rng.below(universe.len())];
        if !rated.contains(&item) && !chosen.contains(&item) {
            chosen.push(item);
        }
    }
    chosen
}

struct CandidateKeys<'a> {
    movies: &'a HashMap<i64, &'a Item>,
    popularity: &'a HashMap<i64, usize>,
    co_watch: &'a CoWatch,
    wanted: &'a [String],
}

impl CandidateKeys<'_> {
    /// All candidates of one request; `co_watch_rank` needs them together.
    fn candidates_json(&self, ids: &[i64], history: &[i64], own: Option<&CoWatch>) -> Value {
        let mut candidates: Vec<Value> = ids
            .iter()
            .map(|&id| self.candidate_json(id, history, own))
            .collect();
        if self.wanted.iter().any(|k| k == "co_watch_rank") {
            let params = CoWatchParams::default();
            let scores: Vec<f64> = ids
                .iter()
                .map(|&id| self.co_watch.score(history, id, &params, own))
                .collect();
            for (candidate, score) in candidates.iter_mut().zip(&scores) {
                // 1 = the most co-watched of this request's candidates; ties share a rank.
                let rank = 1 + scores.iter().filter(|other| *other > score).count();
                if let Value::Object(object) = candidate {
                    object.insert("co_watch_rank".into(), json!(rank));
                }
            }
        }
        Value::Array(candidates)
    }

    /// `own` is the requesting user's training sequence, left out of the co-watch counts.
    fn candidate_json(&self, id: i64, history: &[i64], own: Option<&CoWatch>) -> Value {
        let movie = self.movies.get(&id);
        let mut object = Map::new();
        object.insert("id".into(), json!(id));
        if let Some(title) = movie.and_then(|m| m.title.as_ref()) {
            object.insert("title".into(), json!(title));
        }
        for key in self.wanted {
            let value = match key.as_str() {
                "genres" => json!(movie.and_then(|m| m.genres.as_deref()).unwrap_or("")),
                "year" => json!(movie.and_then(|m| m.year)),
                "popularity" => json!(self.popularity.get(&id).copied().unwrap_or(0)),
                // Tenths of the tuned co-occurrence score: an integer keeps the prompt short
                // and still orders candidates almost as finely as the float.
                "co_watch" => json!((10.0
                    * self
                        .co_watch
                        .score(history, id, &CoWatchParams::default(), own))
                .round() as i64),
                _ => continue,
            };
            object.insert(key.clone(), value);
        }
        if let Some(movie) = movie {
            for (key, value) in &movie.keys {
                object.entry(key.clone()).or_insert_with(|| value.clone());
            }
        }
        Value::Object(object)
    }
}

/// The candidate keys `data --candidate-keys` understands.
pub const CANDIDATE_KEYS: [&str; 5] = ["genres", "year", "popularity", "co_watch", "co_watch_rank"];

impl Instance {
    /// The request as kvrec-core parses it.
    pub fn request(&self) -> kvrec_core::Result<kvrec_core::Request> {
        kvrec_core::Request::from_values(&self.user, &self.history, &self.candidates)
    }
}
