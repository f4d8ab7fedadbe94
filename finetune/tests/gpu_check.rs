//! scripts/gpu-check.sh --dry-run on this CPU machine: a bundle assembled from this test run's
//! build (the bench binary, the extension, a tiny catalog model, requests), then the whole
//! check but the CUDA build: both benchmark runs and the summary table. So the script works
//! the first time a GPU machine runs it for real.

use kvrec_test_support as common;

use std::path::Path;
use std::process::Command;

use serde_json::json;

fn bundle(dir: &Path) {
    for sub in ["bin", "lib"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    std::os::unix::fs::symlink(
        env!("CARGO_BIN_EXE_kvrec-finetune"),
        dir.join("bin/kvrec-finetune"),
    )
    .unwrap();
    std::os::unix::fs::symlink(common::extension_path(), dir.join("lib/libkvrec.so")).unwrap();
    let items: Vec<i64> = (1..=40).collect();
    kvrec_llm::tiny::write_tiny_catalog_llama(&dir.join("model.gguf"), 3, &items, true, None)
        .unwrap();
    let lines: String = (0..30i64)
        .map(|i| {
            let history: Vec<_> = (0..10)
                .map(|j| json!({"id": (i + 3 * j) % 40 + 1}))
                .collect();
            let candidates: Vec<_> = (0..10)
                .map(|j| json!({"id": (i * 7 + 4 * j) % 40 + 1}))
                .collect();
            let positive = candidates[0]["id"].clone();
            let line = json!({"user_id": i + 1, "split": "test", "user": {}, "history": history,
                              "candidates": candidates, "positive": positive});
            format!("{line}\n")
        })
        .collect();
    std::fs::write(dir.join("requests.jsonl"), lines).unwrap();
}

fn gpu_check(args: &[&str]) -> (bool, String) {
    let out = Command::new("bash")
        .arg(common::repo_root().join("scripts/gpu-check.sh"))
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn the_gpu_check_runs_dry_on_a_cpu_machine() {
    let dir = std::env::temp_dir().join(format!("kvrec-gpu-check-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    bundle(&dir);
    let (ok, text) = gpu_check(&["--dry-run", "--n", "20", dir.to_str().unwrap()]);
    assert!(ok, "{text}");
    assert!(text.contains("dry run"), "{text}");
    // Both runs reached the summary, each with positive rates and a ratio.
    for label in ["| n_gpu_layers 999 |", "| n_gpu_layers 0 |"] {
        let row = text
            .lines()
            .find(|l| l.starts_with(label))
            .unwrap_or_else(|| panic!("no row {label} in:\n{text}"));
        let cells: Vec<f64> = row
            .split('|')
            .skip(2)
            .filter_map(|c| c.trim().parse().ok())
            .collect();
        assert_eq!(cells.len(), 5, "{row}");
        assert!(cells.iter().all(|&c| c > 0.0), "{row}");
    }
    assert!(text.contains("llama.cpp devices:"), "{text}");

    // A bundle without its model is refused with the fix.
    std::fs::remove_file(dir.join("model.gguf")).unwrap();
    let (ok, text) = gpu_check(&["--dry-run", dir.to_str().unwrap()]);
    assert!(
        !ok && text.contains("model.gguf is missing") && text.contains("gpu-bundle.sh"),
        "{text}"
    );
    // Without a bundle, or with a bad option, the usage line.
    for args in [
        &["--dry-run"][..],
        &["--arhc", "90a", dir.to_str().unwrap()][..],
    ] {
        let (ok, text) = gpu_check(args);
        assert!(
            !ok && text.contains("usage: bash scripts/gpu-check.sh"),
            "{args:?}: {text}"
        );
    }
}
