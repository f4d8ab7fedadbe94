//! The protocol on synthetic data: splits, negatives, filtering, determinism, truncation, and
//! the baselines through `eval`.

use std::collections::HashSet;

use kvrec_core::rng::Rng;
use kvrec_evaluation::baselines::{CoOccurrenceScorer, PopularityScorer, RandomScorer};
use kvrec_evaluation::cowatch::CoWatchParams;
use kvrec_evaluation::eval::evaluate;
use kvrec_evaluation::movielens::{Dataset, Movie, Rating, User};
use kvrec_evaluation::protocol::{build, sequences, ProtocolConfig, Split, TieOrder};
use kvrec_evaluation::training_data;

/// `users` users with 6..=40 ratings each over `movies` movies; movie 999 is rated 3 times only.
fn synthetic(users: i64, movies: i64, seed: u64) -> Dataset {
    let mut rng = Rng::new(seed);
    let mut data = Dataset::default();
    for id in 1..=movies {
        data.movies.push(Movie {
            id,
            title: format!("Movie {id} (1990)"),
            genres: "Drama".into(),
            year: Some(1990),
        });
    }
    data.movies.push(Movie {
        id: 999,
        title: "Rare (2000)".into(),
        genres: "War".into(),
        year: Some(2000),
    });
    for id in 1..=users {
        data.users.push(User {
            id,
            gender: "female".into(),
            age: "25-34".into(),
            occupation: "writer".into(),
            zip_code: "0".into(),
        });
        let mut items: Vec<i64> = (1..=movies).collect();
        rng.shuffle(&mut items);
        let n = 6 + rng.below(35);
        for (t, &movie_id) in items.iter().take(n).enumerate() {
            // Every third rating shares its timestamp with the previous one: ties must be ordered.
            let ts = 1_000_000 + id * 1000 + (t as i64 / 3) * 3;
            data.ratings.push(Rating {
                user_id: id,
                movie_id,
                rating: 1 + rng.below(5) as i64,
                ts,
            });
        }
        if id <= 3 {
            data.ratings.push(Rating {
                user_id: id,
                movie_id: 999,
                rating: 5,
                ts: 2_000_000,
            });
        }
    }
    data.users.push(User {
        id: 10_000,
        gender: "male".into(),
        age: "56+".into(),
        occupation: "other".into(),
        zip_code: "0".into(),
    });
    data.ratings.extend((1..=4).map(|m| Rating {
        user_id: 10_000,
        movie_id: m,
        rating: 3,
        ts: 5,
    }));
    data
}

fn ids(value: &serde_json::Value) -> Vec<i64> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_i64().unwrap())
        .collect()
}

#[test]
fn five_core_filter_drops_rare_users_and_items() {
    let data = synthetic(50, 60, 1);
    let seqs = sequences(&data, 5, TieOrder::MovieId);
    assert!(
        seqs.iter().all(|(u, _)| *u != 10_000),
        "a user with 4 ratings is dropped"
    );
    assert!(
        seqs.iter()
            .all(|(_, items)| items.iter().all(|(m, _)| *m != 999)),
        "an item with 3 ratings is dropped"
    );
    assert_eq!(seqs.len(), 50);
}

#[test]
fn leave_one_out_splits_and_history() {
    let data = synthetic(60, 80, 2);
    let config = ProtocolConfig {
        test_users: 25,
        ..ProtocolConfig::default()
    };
    let out = build(&data, &config);
    assert_eq!(out.train.len(), 60, "one train instance per user");
    assert_eq!(out.test.len(), 25, "the sampled test users");
    let seqs = sequences(&data, 5, TieOrder::MovieId);
    for instance in out.train.iter().chain(&out.test) {
        let items: Vec<i64> = seqs
            .iter()
            .find(|(u, _)| *u == instance.user_id)
            .unwrap()
            .1
            .iter()
            .map(|(m, _)| *m)
            .collect();
        let n = items.len();
        let (target, before) = match instance.split {
            Split::Train => (items[n - 2], &items[..n - 2]),
            Split::Test => (items[n - 1], &items[..n - 1]),
        };
        assert_eq!(instance.positive, target);
        let history = ids(&instance.history);
        assert_eq!(
            history,
            before[before.len().saturating_sub(20)..],
            "the 20 most recent, oldest first"
        );
        assert!(history.len() <= 20);
        let candidates = ids(&instance.candidates);
        assert_eq!(candidates.len(), 10);
        assert_eq!(
            candidates.iter().collect::<HashSet<_>>().len(),
            10,
            "distinct candidates"
        );
        assert!(candidates.contains(&target));
        for negative in candidates.iter().filter(|&&c| c != target) {
            assert!(
                !items.contains(negative),
                "user {}: negative {negative} was rated",
                instance.user_id
            );
        }
    }
    for test in &out.test {
        let sequence = out
            .train_sequences
            .iter()
            .find(|s| s.user_id == test.user_id)
            .unwrap();
        assert!(
            !sequence.items.contains(&test.positive),
            "training sequences never hold a test target"
        );
    }
}

#[test]
fn the_positive_is_spread_over_candidate_positions() {
    let out = build(
        &synthetic(400, 120, 3),
        &ProtocolConfig {
            test_users: 400,
            ..ProtocolConfig::default()
        },
    );
    let first = out
        .test
        .iter()
        .filter(|i| ids(&i.candidates)[0] == i.positive)
        .count();
    assert!(
        (15..70).contains(&first),
        "the positive was first in {first} of 400 lists"
    );
}

#[test]
fn same_seed_same_data_other_seed_other_data() {
    let data = synthetic(40, 70, 4);
    let a = build(&data, &ProtocolConfig::default());
    let b = build(&data, &ProtocolConfig::default());
    assert_eq!(a.test, b.test);
    assert_eq!(a.train, b.train);
    let c = build(
        &data,
        &ProtocolConfig {
            seed: 7,
            ..ProtocolConfig::default()
        },
    );
    assert_ne!(a.train, c.train);
}

#[test]
fn history_length_and_candidate_keys_are_options() {
    let config = ProtocolConfig {
        max_history: 5,
        candidates: 4,
        candidate_keys: vec!["genres".into(), "popularity".into()],
        ..ProtocolConfig::default()
    };
    let out = build(&synthetic(30, 60, 5), &config);
    for instance in &out.train {
        assert!(instance.history.as_array().unwrap().len() <= 5);
        let candidates = instance.candidates.as_array().unwrap();
        assert_eq!(candidates.len(), 4);
        assert!(candidates
            .iter()
            .all(|c| c["genres"] == "Drama" && c["popularity"].is_u64()));
        instance.request().unwrap();
    }
}

#[test]
fn augmented_training_rows_keep_the_label() {
    let out = build(&synthetic(20, 50, 6), &ProtocolConfig::default());
    let rows = training_data::rows(&out.train, "SO", 4, 1).unwrap();
    assert_eq!(rows.len(), 20 * 5);
    for row in &rows {
        assert_eq!(row.target[0], row.positive);
        assert_eq!(row.target.len(), 10);
    }
    assert_eq!(
        training_data::rows(&out.train, "none", 4, 1).unwrap().len(),
        20,
        "no copies of the identity"
    );
}

#[test]
fn random_baseline_is_near_chance_and_learned_ones_beat_it() {
    let out = build(
        &synthetic(1500, 200, 7),
        &ProtocolConfig {
            test_users: 1500,
            ..ProtocolConfig::default()
        },
    );
    let random = evaluate(&RandomScorer { seed: 3 }, &out.test)
        .unwrap()
        .summary;
    assert!(
        (random.hr1 - 0.1).abs() < 0.03,
        "random HR@1 {}",
        random.hr1
    );
    assert!(
        (random.hr5 - 0.5).abs() < 0.05,
        "random HR@5 {}",
        random.hr5
    );
    assert_eq!(random.error_rate, 0.0);
    // Synthetic ratings are uniform, so neither learned baseline can do much better, but
    // both must run over the same requests and produce sane numbers.
    for summary in [
        evaluate(&PopularityScorer::new(&out.train_sequences), &out.test)
            .unwrap()
            .summary,
        evaluate(
            &CoOccurrenceScorer::new(
                &out.train_sequences,
                CoWatchParams {
                    decay: 1.0,
                    normalize: 0.0,
                    ..CoWatchParams::default()
                },
            ),
            &out.test,
        )
        .unwrap()
        .summary,
    ] {
        assert_eq!(summary.n, 1500);
        assert!(summary.hr1 <= summary.hr3 && summary.hr3 <= summary.hr5 && summary.hr5 <= 1.0);
    }
}

#[test]
fn earlier_train_targets_walk_back_through_the_sequence() {
    let data = synthetic(30, 80, 5);
    let config = ProtocolConfig {
        test_users: 5,
        train_targets: 3,
        ..ProtocolConfig::default()
    };
    let out = build(&data, &config);
    let single = build(
        &data,
        &ProtocolConfig {
            train_targets: 1,
            ..config.clone()
        },
    );
    let seqs = sequences(&data, 5, TieOrder::MovieId);
    for (user, items) in &seqs {
        let items: Vec<i64> = items.iter().map(|(m, _)| *m).collect();
        let mine: Vec<_> = out.train.iter().filter(|i| i.user_id == *user).collect();
        let n = items.len();
        let expected = (n - 2).min(3);
        assert_eq!(mine.len(), expected, "user {user} with {n} items");
        for (back, instance) in mine.iter().enumerate() {
            assert_eq!(instance.positive, items[n - 2 - back]);
            let history = ids(&instance.history);
            assert_eq!(history.last(), Some(&items[n - 3 - back]));
        }
        // The paper's target keeps the same candidates as a one-target run.
        let paper = single.train.iter().find(|i| i.user_id == *user).unwrap();
        assert_eq!(mine[0], paper);
    }
    assert_eq!(out.test, single.test);
}

#[test]
fn co_watch_key_leaves_out_the_users_own_sequence() {
    // Two users watch 1 → 2 → 3 → 4 → 5 → 6; user 3 watches 1 → 7 → 3 → 8 → 9 → 6.
    let mut data = synthetic(0, 10, 1);
    for (user, items) in [
        (1, [1, 2, 3, 4, 5, 6]),
        (2, [1, 2, 3, 4, 5, 6]),
        (3, [1, 7, 3, 8, 9, 6]),
    ] {
        data.users.push(User {
            id: user,
            gender: "male".into(),
            age: "18-24".into(),
            occupation: "writer".into(),
            zip_code: "0".into(),
        });
        for (t, m) in items.iter().enumerate() {
            data.ratings.push(Rating {
                user_id: user,
                movie_id: *m,
                rating: 4,
                ts: 1000 + t as i64,
            });
        }
    }
    let out = build(
        &data,
        &ProtocolConfig {
            min_interactions: 1,
            candidate_keys: vec!["co_watch".into()],
            ..ProtocolConfig::default()
        },
    );
    let co_watch_of = |instance: &kvrec_evaluation::protocol::Instance, id: i64| {
        instance
            .candidates
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id)
            .map(|c| c["co_watch"].as_i64().unwrap())
            .unwrap()
    };
    // User 1's train target is 5 after history 1..4: only user 2's sequence may count
    // (user 3 never watched 5). With the user's own sequence it would be twice as large.
    let train = out.train.iter().find(|i| i.user_id == 1).unwrap();
    let own_left_out = co_watch_of(train, 5);
    let user2 = out.train.iter().find(|i| i.user_id == 2).unwrap();
    assert_eq!(
        own_left_out,
        co_watch_of(user2, 5),
        "symmetric users see the same count"
    );
    assert!(own_left_out > 0);
    let params = kvrec_evaluation::cowatch::CoWatchParams::default();
    let table = kvrec_evaluation::cowatch::CoWatch::new(&out.train_sequences[1..2], params.window);
    let expected = (10.0 * table.score(&[1, 2, 3, 4], 5, &params, None)).round() as i64;
    assert_eq!(own_left_out, expected);
}

#[test]
fn the_tie_rule_changes_only_the_order_within_a_second() {
    let data = synthetic(40, 60, 5);
    let ts: std::collections::HashMap<(i64, i64), i64> = data
        .ratings
        .iter()
        .map(|r| ((r.user_id, r.movie_id), r.ts))
        .collect();
    let file_position: std::collections::HashMap<(i64, i64), usize> = data
        .ratings
        .iter()
        .enumerate()
        .map(|(i, r)| ((r.user_id, r.movie_id), i))
        .collect();
    let by_id = sequences(&data, 5, TieOrder::MovieId);
    let by_file = sequences(&data, 5, TieOrder::File);
    let mut reordered_users = 0;
    for ((user, a), (user_b, b)) in by_id.iter().zip(&by_file) {
        assert_eq!(user, user_b);
        let times = |items: &[(i64, Option<i64>)]| -> Vec<i64> {
            items.iter().map(|(m, _)| ts[&(*user, *m)]).collect()
        };
        // Same items at the same times: only the order inside a second may differ.
        assert_eq!(times(a), times(b));
        let mut sorted_a = a.clone();
        let mut sorted_b = b.clone();
        sorted_a.sort_unstable();
        sorted_b.sort_unstable();
        assert_eq!(sorted_a, sorted_b);
        for (x, y) in a.iter().zip(a.iter().skip(1)) {
            if ts[&(*user, x.0)] == ts[&(*user, y.0)] {
                assert!(x.0 < y.0, "movie-id rule: ascending ids within a second");
            }
        }
        for (x, y) in b.iter().zip(b.iter().skip(1)) {
            if ts[&(*user, x.0)] == ts[&(*user, y.0)] {
                assert!(
                    file_position[&(*user, x.0)] < file_position[&(*user, y.0)],
                    "file rule: the file's order within a second"
                );
            }
        }
        reordered_users += usize::from(a != b);
    }
    assert!(
        reordered_users > 10,
        "the fixture's ties do reorder ({reordered_users} users)"
    );
    // The rule reaches the requests: some test targets change.
    let config = |tie_order| ProtocolConfig {
        tie_order,
        ..ProtocolConfig::default()
    };
    let (x, y) = (
        build(&data, &config(TieOrder::MovieId)),
        build(&data, &config(TieOrder::File)),
    );
    assert!(x
        .test
        .iter()
        .zip(&y.test)
        .any(|(a, b)| a.positive != b.positive));
    // The training sequences carry each item's second, which `train --shuffle-ties` reads.
    for sequence in x.train_sequences.iter().chain(&y.train_sequences) {
        let times: Vec<i64> = sequence
            .items
            .iter()
            .map(|m| ts[&(sequence.user_id, *m)])
            .collect();
        assert_eq!(sequence.times, times, "user {}", sequence.user_id);
    }
}
