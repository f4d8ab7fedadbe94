//! `fit`: the configuration it derives from data of different shapes, one configuration for
//! the TOML file and the flags, and the whole path (data → train within a budget → export →
//! report) on a recipe without titles or keys, on ML-100K, interrupted and resumed.

use kvrec_test_support as common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use kvrec_finetune::fit::derive::derive;
use kvrec_finetune::fit::shape::DataShape;
use kvrec_finetune::protocol::Sequence;
use serde_json::{json, Value};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kvrec-finetune"))
}

/// One training at a time: the fits keep wall-clock budgets, and llama.cpp's and candle's
/// threads sharing two cores with another test's would spend them on each other.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kvrec-test-{}-fit-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A deterministic shop of `users` customers over `items` products as a CSV recipe without
/// titles or keys: each customer walks along the catalog (item n, then n+1 or n+2), with a
/// jump now and then, so the next item is learnable and counting pairs gets most of it.
fn walking_shop(dir: &Path, users: usize, items: usize) -> PathBuf {
    let mut csv = String::from("customer,product,day\n");
    let mut state = 12345u64;
    let mut next = |bound: usize| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) as usize) % bound
    };
    for user in 0..users {
        let length = 6 + next(10);
        let mut item = next(items);
        for day in 0..length {
            csv.push_str(&format!("u{user},p{item:04},{day}\n"));
            item = if next(6) == 0 {
                next(items)
            } else {
                (item + 1 + next(2)) % items
            };
        }
    }
    std::fs::write(dir.join("events.csv"), csv).unwrap();
    let recipe = dir.join("recipe.toml");
    std::fs::write(
        &recipe,
        "[source]\ncsv = { events = \"events.csv\" }\n\n[interactions]\n\
         sql = \"SELECT customer AS user, product AS item, CAST(day AS INTEGER) AS time FROM events\"\n",
    )
    .unwrap();
    recipe
}

/// A shape with ties listed in an arbitrary order (`ordered`: as they happened).
fn shape(
    users: usize,
    items: usize,
    per_user: usize,
    tie_share: f64,
    keys: usize,
    ordered: bool,
) -> DataShape {
    DataShape {
        users,
        items,
        max_item_id: items as i64,
        events: users * per_user,
        p95_length: per_user * 2,
        tie_share,
        tie_order_agreement: if ordered { 0.76 } else { 0.5 },
        items_with_keys: keys,
        items_with_vectors: 0,
    }
}

#[test]
fn the_configuration_follows_the_data_shape() {
    let shapes = [
        ("ml-1m-like", shape(2999, 3700, 170, 0.5, 3700, false)),
        ("ml-100k-like", shape(943, 1682, 100, 0.3, 1682, false)),
        ("shop-like", shape(22000, 12000, 9, 0.0, 0, false)),
        ("tiny", shape(40, 60, 8, 0.0, 60, false)),
        ("ordered-log-like", shape(12000, 4400, 7, 0.6, 0, true)),
    ];
    let derived: Vec<Value> = shapes
        .iter()
        .map(|(name, shape)| {
            let c = derive(shape);
            json!({
                "shape": name,
                "events_per_item": (shape.events_per_item() * 10.0).round() / 10.0,
                "number_tokens": c.number_tokens,
                "d_model": c.d_model,
                "layers": c.layers,
                "heads": c.heads,
                "ff": c.ff,
                "window": c.sequence_window,
                "context": c.context,
                "dropout": c.dropout,
                "lr": c.lr,
                "batch": c.batch,
                "epochs": c.epochs,
                "patience": c.patience,
                "valid_users": c.valid_users,
                "mask_seen": c.targets.mask_seen,
                "future_items": c.targets.future_items,
                "output_sample": c.targets.output_sample,
                "tied": c.tied,
                "length_buckets": c.length_buckets,
            })
        })
        .collect();
    insta::assert_json_snapshot!(derived);
}

#[test]
fn the_shape_is_read_from_the_sequences() {
    let sequences = vec![
        Sequence {
            user_id: 1,
            items: vec![3, 1, 2],
            times: vec![10, 10, 11],
        },
        Sequence {
            user_id: 2,
            items: vec![7, 3],
            times: vec![5, 6],
        },
    ];
    let shape = DataShape::of(&sequences, &[3, 9], &[]);
    assert_eq!((shape.users, shape.items), (2, 4));
    assert_eq!(shape.max_item_id, 9, "a keyed item needs its token too");
    assert_eq!((shape.events, shape.p95_length), (5, 3));
    assert!(
        (shape.tie_share - 1.0 / 3.0).abs() < 1e-9,
        "{}",
        shape.tie_share
    );
    assert_eq!(shape.items_with_keys, 2);
}

/// The order within ties is judged by the pairs' order where they are not tied.
#[test]
fn the_order_within_ties_is_read_against_untied_pairs() {
    let user = |user_id, items: Vec<i64>, times: Vec<i64>| Sequence {
        user_id,
        items,
        times,
    };
    // 1 → 2 and 3 → 4 happen untied; the tied pairs list 1, 2 forward and 4, 3 backward, and
    // 5, 6 have never been seen untied.
    let untied = [
        user(1, vec![1, 2], vec![1, 2]),
        user(2, vec![3, 4], vec![1, 2]),
    ];
    let forward = [
        user(3, vec![1, 2], vec![5, 5]),
        user(4, vec![1, 2], vec![7, 7]),
    ];
    let mixed = [
        user(3, vec![1, 2], vec![5, 5]),
        user(4, vec![4, 3], vec![7, 7]),
    ];
    let unknown = [user(3, vec![5, 6], vec![5, 5])];
    let shape_with = |tied: &[Sequence]| {
        let all: Vec<Sequence> = untied.iter().chain(tied).cloned().collect();
        DataShape::of(&all, &[], &[])
    };
    assert_eq!(shape_with(&forward).tie_order_agreement, 1.0);
    assert_eq!(shape_with(&mixed).tie_order_agreement, 0.5);
    assert_eq!(
        shape_with(&unknown).tie_order_agreement,
        0.5,
        "no evidence reads as arbitrary"
    );
    assert!(shape_with(&forward).ties_keep_order());
    assert!(!shape_with(&mixed).ties_keep_order());
}

/// `train` with `--config` and with the same options as flags writes the same run.json, and
/// a flag beside the file overrides it.
#[test]
fn the_config_file_and_the_flags_give_the_same_run() {
    let _alone = one_at_a_time();
    let dir = scratch("config");
    let recipe = walking_shop(&dir, 30, 40);
    let data = dir.join("data");
    common::run(
        bin()
            .args(["data", "--recipe"])
            .arg(&recipe)
            .arg("--out")
            .arg(&data)
            .args(["--variants", "none", "--copies", "0", "--test-users", "5"]),
    );
    let flags = [
        "--template",
        "models/kvrec-default.template.json",
        "--number-tokens",
        "40",
        "--vocab",
        "300",
        "--sequence-window",
        "12",
        "--context",
        "32",
        "--d-model",
        "16",
        "--layers",
        "1",
        "--heads",
        "1",
        "--ff",
        "32",
        "--untied",
        "--mask-seen",
        "--dropout",
        "0.1",
        "--batch",
        "8",
    ];
    let run_json = |out: &Path| -> Value {
        let text = std::fs::read_to_string(out.join("run.json")).unwrap();
        serde_json::from_str::<Value>(&text).unwrap()["config"].clone()
    };
    let root = common::repo_root();
    let sequences = data.join("train_sequences.jsonl");
    let by_flags = dir.join("by-flags");
    common::run(
        bin()
            .current_dir(&root)
            .args(["train", "--data"])
            .arg(&sequences)
            .args(flags)
            .args(["--stop-after", "1", "--out"])
            .arg(&by_flags),
    );
    let config = dir.join("train.toml");
    let template = root.join("models/kvrec-default.template.json");
    std::fs::write(
        &config,
        format!(
            "data = [\"data/train_sequences.jsonl\"]\ntemplate = \"{}\"\nnumber_tokens = 40\n\
             vocab_size = 300\nsequence_window = 12\ncontext = 32\nd_model = 16\nlayers = 1\n\
             heads = 1\nff = 32\ntied = false\nmask_seen = true\ndropout = 0.1\nbatch = 8\n",
            template.display()
        ),
    )
    .unwrap();
    let by_file = dir.join("by-file");
    common::run(
        bin()
            .args(["train", "--config"])
            .arg(&config)
            .args(["--stop-after", "1", "--out"])
            .arg(&by_file),
    );
    assert_eq!(run_json(&by_flags), run_json(&by_file));

    let overridden = dir.join("overridden");
    common::run(
        bin()
            .args(["train", "--config"])
            .arg(&config)
            .args(["--dropout", "0.3", "--stop-after", "1", "--out"])
            .arg(&overridden),
    );
    let mut expected = run_json(&by_file);
    expected["dropout"] = json!(0.3);
    assert_eq!(run_json(&overridden), expected);

    std::fs::write(dir.join("typo.toml"), "dropuot = 0.3\n").unwrap();
    let typo = bin()
        .args(["train", "--config"])
        .arg(dir.join("typo.toml"))
        .args(["--data"])
        .arg(&sequences)
        .arg("--out")
        .arg(dir.join("typo"))
        .output()
        .unwrap();
    let error = String::from_utf8_lossy(&typo.stderr);
    assert!(!typo.status.success());
    assert!(
        error.contains("'dropuot' is not a training option") && error.contains("dropout"),
        "{error}"
    );
}

fn fit(args: &[&str], recipe_or_from: &[&std::ffi::OsStr], out: &Path) -> (String, bool) {
    let output = bin()
        .arg("fit")
        .args(recipe_or_from)
        .arg("--out")
        .arg(out)
        .args(args)
        .env_remove("KVREC_GEMMA_GGUF")
        .env("HOME", out.parent().unwrap())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (text, output.status.success())
}

/// A recipe with nothing but who bought what when fits end to end: a model, a report that
/// says how it compares with co-occurrence, the configuration it used, and the SQL that
/// serves it; the model answers in the recipe's own ids.
#[test]
fn a_recipe_without_titles_or_keys_fits_end_to_end() {
    let _alone = one_at_a_time();
    let dir = scratch("plain");
    let recipe = walking_shop(&dir, 300, 80);
    let out = dir.join("fit");
    let (printed, ok) = fit(
        &["--budget", "40s", "--test-users", "100"],
        &[recipe.as_os_str()],
        &out,
    );
    assert!(ok, "{printed}");
    for file in [
        "model.gguf",
        "report.md",
        "train.toml",
        "validation.png",
        "ranks.png",
    ] {
        assert!(out.join(file).exists(), "{file}\n{printed}");
    }
    assert!(!out.join("model.gguf.partial").exists());
    assert!(printed.contains("kvrec_load_model('fit', "), "{printed}");
    assert!(printed.contains("co-occurrence"), "{printed}");
    assert!(
        printed.contains("The model serves alone")
            || printed.contains("The model serves with a co-watch prior"),
        "{printed}"
    );
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    for section in [
        "## Data",
        "## Training",
        "## Held-out users: the protocol's candidates",
        "## Held-out users: the whole catalog",
        "## Serve it",
    ] {
        assert!(report.contains(section), "{section}\n{report}");
    }
    assert!(
        report.contains("popularity") && report.contains("co-occurrence (window"),
        "{report}"
    );
    assert!(
        report.contains("0 items with keys, 0 with title vectors"),
        "{report}"
    );
    let config = std::fs::read_to_string(out.join("train.toml")).unwrap();
    assert!(config.contains("number_tokens = 80"), "{config}");

    let db = common::connect(None);
    db.query_row(
        "SELECT kvrec_load_model('fit', ?1)",
        [out.join("model.gguf").to_str().unwrap()],
        |_| Ok(()),
    )
    .unwrap();
    let top: String = db
        .query_row(
            "SELECT recommend_topk('fit', '{}', '[{\"id\":\"p0010\"},{\"id\":\"p0011\"}]', 3)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let top: Vec<String> = serde_json::from_str(&top).unwrap();
    assert_eq!(top.len(), 3);
    assert!(top.iter().all(|id| id.starts_with('p')), "{top:?}");

    let (again, ok) = fit(&["--budget", "40s"], &[recipe.as_os_str()], &out);
    assert!(!ok);
    assert!(
        again.contains("holds an earlier fit; pass --resume"),
        "{again}"
    );
}

/// ML-100K under a budget that ends training mid-way: the fit ends within the budget, says the
/// budget stopped it, and `--resume` continues the same run from its checkpoint.
#[test]
fn a_fit_keeps_its_budget_and_resumes() {
    let Some(ml100k) = common::shared_data("ml-100k") else {
        return;
    };
    let _alone = one_at_a_time();
    let dir = scratch("ml100k");
    let out = dir.join("ml100k");
    let from = [std::ffi::OsStr::new("--from"), ml100k.as_os_str()];
    // No patience: only the budget ends this training.
    let config = dir.join("no-patience.toml");
    std::fs::write(&config, "patience = 0\n").unwrap();
    let config = config.to_str().unwrap();
    let started = Instant::now();
    let (printed, ok) = fit(
        &["--budget", "45s", "--test-users", "200", "--config", config],
        &from,
        &out,
    );
    let seconds = started.elapsed().as_secs_f64();
    assert!(ok, "{printed}");
    assert!(
        seconds < 45.0 + 5.0,
        "a 45 s budget took {seconds:.0} s\n{printed}"
    );
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("stopped by deadline"), "{report}");
    let steps = |out: &Path| -> usize {
        let state: Value = serde_json::from_str(
            &std::fs::read_to_string(out.join("run/checkpoint.json")).unwrap(),
        )
        .unwrap();
        state["step"].as_u64().unwrap() as usize
    };
    let before = steps(&out);
    let (printed, ok) = fit(
        &[
            "--budget",
            "45s",
            "--test-users",
            "200",
            "--config",
            config,
            "--resume",
        ],
        &from,
        &out,
    );
    assert!(ok, "{printed}");
    assert!(
        steps(&out) > before,
        "resumed from step {before}\n{printed}"
    );
}

/// The shipped model's training options (`models/kvrec-default.train.toml`, which
/// `scripts/train_default.sh` passes to `train --config`) describe the shipped model: its
/// shape and template.
#[test]
fn the_shipped_training_options_describe_the_shipped_model() {
    let root = common::repo_root();
    let config = kvrec_finetune::train::TrainConfig::default()
        .overlay_file(&root.join("models/kvrec-default.train.toml"))
        .unwrap();
    let shipped =
        kvrec_finetune::train::base::Base::read(&root.join("models/kvrec-default.gguf")).unwrap();
    let shape = config.shape();
    assert_eq!(
        (
            shape.n_embd,
            shape.n_layer,
            shape.n_head,
            shape.n_ff,
            shape.context
        ),
        (
            shipped.shape.n_embd,
            shipped.shape.n_layer,
            shipped.shape.n_head,
            shipped.shape.n_ff,
            shipped.shape.context
        )
    );
    assert_eq!(Some(&config.template), shipped.template.as_ref());
    // Every movie id of the shipped vocabulary is a token: the BPE part plus the numbers.
    assert!(
        shipped.shape.n_vocab > config.number_tokens,
        "{}",
        shipped.shape.n_vocab
    );
    assert!(config.targets.mask_seen && config.targets.future_items == 3);
    assert_eq!(
        config.shards, 1,
        "the shipped weights were trained unsharded"
    );
}
