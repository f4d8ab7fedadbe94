//! `data --item-text-model`: each item's title and genres read by a GGUF language model (here
//! the tiny llama the backend's tests use) into item_vectors.jsonl, and the refusals.

use kvrec_test_support as common;

use std::path::{Path, PathBuf};
use std::process::Command;

use kvrec_finetune::io::read_jsonl;
use kvrec_finetune::train::item_features::vectors::{ItemVector, ITEM_VECTORS_FILE};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kvrec-item-text-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn data(out: &Path, model: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kvrec-finetune"));
    command
        .args(["data", "--from"])
        .arg(common::ml_tiny())
        .arg("--out")
        .arg(out)
        .args(["--variants", "none", "--copies", "0", "--test-users", "4"])
        .arg("--item-text-model")
        .arg(model)
        .args(["--threads", "1"])
        .env("RUST_BACKTRACE", "0");
    command
}

#[test]
fn data_writes_a_unit_text_vector_for_every_titled_item() {
    let dir = scratch("vectors");
    let model = dir.join("reader.gguf");
    kvrec_llm::tiny::write_tiny_llama(&model, 3, None).unwrap();
    let out = dir.join("data");
    common::run(&mut data(&out, &model));

    let vectors: Vec<ItemVector> = read_jsonl(&out.join(ITEM_VECTORS_FILE)).unwrap();
    // MovieLens files are Latin-1: count lines, not characters.
    let movies = std::fs::read(common::ml_tiny().join("movies.dat")).unwrap();
    let titled = movies
        .split(|&b| b == b'\n')
        .filter(|l| l.len() > 1)
        .count();
    assert_eq!(vectors.len(), titled, "one vector per movie of the fixture");
    assert!(
        vectors.windows(2).all(|w| w[0].id < w[1].id),
        "sorted by id"
    );
    for v in &vectors {
        assert_eq!(v.vector.len(), 64, "the reader's width");
        let norm: f32 = v.vector.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "item {}: norm {norm}", v.id);
    }
    // Standardized: every dimension is centred over the items (up to each vector's own
    // scaling to unit length), however far from zero the reader's raw dimension lies.
    let n = vectors.len() as f32;
    for d in 0..64 {
        let mean: f32 = vectors.iter().map(|v| v.vector[d]).sum::<f32>() / n;
        let rms = (vectors.iter().map(|v| v.vector[d].powi(2)).sum::<f32>() / n).sqrt();
        assert!(
            mean.abs() < 0.1 * rms,
            "dimension {d}: mean {mean}, rms {rms}"
        );
    }
    assert_ne!(vectors[0].vector, vectors[1].vector);
}

#[test]
fn a_reader_that_is_not_a_gguf_is_refused_and_leaves_no_output() {
    let dir = scratch("refused");
    let model = dir.join("reader.gguf");
    std::fs::write(&model, b"not a model").unwrap();
    let out = dir.join("data");
    let result = data(&out, &model).output().unwrap();
    assert!(!result.status.success());
    let error = String::from_utf8_lossy(&result.stderr);
    assert!(
        error.contains("reader.gguf") && error.contains("not a GGUF"),
        "{error}"
    );
    assert!(!out.exists(), "a failed run leaves no output folder");
}
