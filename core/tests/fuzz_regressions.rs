//! Replays the fuzz corpus kept in fuzz/regressions/<target>/ (inputs that once found a bug,
//! plus hand-made seeds) through the same harnesses the fuzz targets run.

use std::path::Path;

use kvrec_core::fuzz_harness;

fn replay(target: &str, harness: fn(&[u8])) -> usize {
    let dir = Path::new(&std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo test"))
        .join("../fuzz/regressions")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| harness(&data));
        assert!(outcome.is_ok(), "{} fails again", path.display());
        n += 1;
    }
    n
}

#[test]
fn request_prompt_augment_corpus_replays() {
    assert!(
        replay(
            "request_prompt_augment",
            fuzz_harness::request_prompt_augment
        ) > 0
    );
}

#[test]
fn answer_corpus_replays() {
    assert!(replay("answer", fuzz_harness::answer) > 0);
}
