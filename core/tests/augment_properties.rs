//! Properties of augmentation and answer parsing over many generated requests and seeds.

use kvrec_test_support as common;

use std::collections::BTreeSet;

use kvrec_core::augment::{augment, augment_dataset, Strategy};
use kvrec_core::rng::Rng;
use kvrec_core::{parse_answer, target_ids, Request, TemplateSpec};
use serde_json::json;

/// A random MovieLens-like request: 0–30 history items, 1–30 candidates, random extra keys.
fn random_request(rng: &mut Rng) -> Request {
    let mut user = serde_json::Map::new();
    for key in ["gender", "age", "occupation", "zip", "mood"] {
        if rng.below(4) > 0 {
            user.insert(key.into(), json!(format!("{key}-{}", rng.below(9))));
        }
    }
    let history: Vec<_> = (0..rng.below(31))
        .map(|i| {
            let mut item = json!({"id": i, "title": format!("T{i} (19{:02})", rng.below(100)), "rating": 1 + rng.below(5)});
            if rng.below(2) == 0 {
                item["genres"] = json!(["Drama", "War"]);
            }
            item
        })
        .collect();
    let mut ids: Vec<i64> = (0..1 + rng.below(30)).map(|i| i as i64 * 7 - 20).collect();
    rng.shuffle(&mut ids);
    let candidates: Vec<_> = ids
        .iter()
        .map(|id| json!({"id": id, "title": format!("C{id}")}))
        .collect();
    Request::from_values(&json!(user), &json!(history), &json!(candidates)).unwrap()
}

fn sorted(ids: impl IntoIterator<Item = i64>) -> Vec<i64> {
    let mut v: Vec<i64> = ids.into_iter().collect();
    v.sort_unstable();
    v
}

const STRATEGIES: [&str; 9] = [
    "none",
    "SC",
    "SO",
    "SK",
    "M1",
    "M2",
    "M3",
    "mask:1",
    "SC+SO+SK+M3",
];

#[test]
fn augmentation_invariants_hold() {
    let mut rng = Rng::new(2024);
    for case in 0..300u64 {
        let request = random_request(&mut rng);
        let positive = request.candidates[rng.below(request.candidates.len())].id;
        let original_ids = sorted(request.candidate_ids());
        let titles: Vec<_> = request
            .history
            .iter()
            .map(|h| h.get("title").cloned())
            .collect();
        for name in STRATEGIES {
            let strategy = Strategy::parse(name).unwrap();
            let out = augment(
                &request,
                Some(positive),
                &strategy,
                case,
                1 + case as usize % 4,
            )
            .unwrap();
            assert_eq!(
                sorted(out.request.candidate_ids()),
                original_ids,
                "{name}: candidates kept"
            );
            let target = out.target.clone().unwrap();
            assert_eq!(target[0], positive, "{name}: positive stays first");
            assert_eq!(
                sorted(target.iter().copied()),
                original_ids,
                "{name}: answer ranks every candidate once"
            );
            let kept: Vec<_> = out
                .request
                .history
                .iter()
                .map(|h| h.get("title").cloned())
                .collect();
            assert_eq!(
                kept, titles,
                "{name}: history titles never masked or reordered"
            );
            assert!(out.masked.iter().all(|k| k != "history.title"));
            let again = augment(
                &request,
                Some(positive),
                &strategy,
                case,
                1 + case as usize % 4,
            )
            .unwrap();
            assert_eq!(again, out, "{name}: same seed, same output");
        }
    }
}

#[test]
fn strategies_only_touch_their_part() {
    let mut rng = Rng::new(5);
    for case in 0..100 {
        let request = random_request(&mut rng);
        let positive = request.candidates[0].id;
        let base = target_ids(&request, positive).unwrap();
        let sc = augment(
            &request,
            Some(positive),
            &Strategy::parse("SC").unwrap(),
            case,
            1,
        )
        .unwrap();
        assert_eq!(sc.target.unwrap(), base, "SC keeps the label");
        assert_eq!(sc.request.user, request.user);
        let so = augment(
            &request,
            Some(positive),
            &Strategy::parse("SO").unwrap(),
            case,
            1,
        )
        .unwrap();
        assert_eq!(so.request, request, "SO leaves the input alone");
    }
}

#[test]
fn masks_remove_the_requested_number_of_keys() {
    let request = common::request();
    let maskable = request.user.len() + request.history_keys().len() - 1;
    assert_eq!(maskable, 5, "the paper's five maskable keys");
    for (name, k) in [("M1", 3), ("M2", 4), ("mask:1", 1), ("mask:9", 5)] {
        for seed in 0..50 {
            let out = augment(&request, None, &Strategy::parse(name).unwrap(), seed, 1).unwrap();
            assert_eq!(out.masked.len(), k, "{name}");
            assert_eq!(
                out.masked.iter().collect::<BTreeSet<_>>().len(),
                k,
                "distinct keys"
            );
            let remaining = out.request.user.len() + out.request.history_keys().len() - 1;
            assert_eq!(remaining, maskable - k);
        }
    }
}

#[test]
fn seeds_and_copies_give_different_streams() {
    let request = common::request();
    let strategy = Strategy::parse("SC").unwrap();
    let orders: BTreeSet<Vec<i64>> = (0..20)
        .map(|seed| {
            augment(&request, None, &strategy, seed, 1)
                .unwrap()
                .request
                .candidate_ids()
        })
        .collect();
    assert!(
        orders.len() > 10,
        "20 seeds gave only {} orders",
        orders.len()
    );
    let copies = augment_dataset(&request, None, &strategy, 3, 4).unwrap();
    assert_eq!(copies.len(), 5);
    assert_eq!(copies[0].request, request, "copy 0 is the original");
}

#[test]
fn so_without_positive_is_an_error() {
    let err = augment(
        &common::request(),
        None,
        &Strategy::parse("SO").unwrap(),
        1,
        1,
    )
    .unwrap_err();
    insta::assert_snapshot!(err.to_string(), @r#"strategy 'SO' reorders the answer, so it needs the positive: pass options '{"positive": <id>}'"#);
}

#[test]
fn parser_round_trips_every_target() {
    let mut rng = Rng::new(77);
    let spec = TemplateSpec::default();
    for case in 0..500 {
        let request = random_request(&mut rng);
        let positive = request.candidates[rng.below(request.candidates.len())].id;
        let out = augment(
            &request,
            Some(positive),
            &Strategy::parse("SO").unwrap(),
            case,
            1,
        )
        .unwrap();
        let target = out.target.unwrap();
        let parsed = parse_answer(&spec.render_answer(&target), &request.candidate_ids());
        assert!(parsed.valid, "{parsed:?}");
        assert_eq!(parsed.ids, target);
        assert!(parsed.missing.is_empty());
    }
}
