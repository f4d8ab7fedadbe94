//! A model's life in a host: unloaded while other connections are mid-call, and the memory it
//! took coming back after unload. Its own test binary, so no other test's allocations blur the
//! resident-set figures.

use kvrec_test_support as common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection};

use common::{CANDIDATES, HISTORY, USER};

/// The tests take turns: resident-set figures mean nothing while another test allocates.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn model_file(name: &str, width: usize, layers: usize) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kvrec-lifecycle-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.gguf"));
    kvrec_llm::tiny::write_random_llama(&path, 3, None, width, layers).unwrap();
    path
}

fn recommend(db: &Connection, model: &str) -> rusqlite::Result<String> {
    db.query_row(
        "SELECT recommend(?1, ?2, ?3, ?4)",
        params![model, USER, HISTORY, CANDIDATES],
        |r| r.get(0),
    )
}

fn load(db: &Connection, name: &str, path: &std::path::Path) {
    db.query_row(
        "SELECT kvrec_load_model(?1, ?2)",
        params![name, path.to_str().unwrap()],
        |_| Ok(()),
    )
    .unwrap();
}

fn unload(db: &Connection, name: &str) {
    db.query_row("SELECT kvrec_unload_model(?1)", [name], |_| Ok(()))
        .unwrap();
}

/// Resident set size of this process in MiB.
fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kib / 1024.0
}

#[test]
fn unloading_while_other_connections_are_mid_call() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let db = common::connect(None);
    let path = model_file("busy", 64, 2);
    load(&db, "busy", &path);
    let serial = recommend(&db, "busy").unwrap();
    let unloaded = AtomicBool::new(false);
    let (answered, refused) = (AtomicUsize::new(0), AtomicUsize::new(0));
    std::thread::scope(|scope| {
        for t in 0..4 {
            let (serial, unloaded, answered, refused) = (&serial, &unloaded, &answered, &refused);
            scope.spawn(move || {
                let db = common::connect(None);
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    assert!(Instant::now() < deadline, "thread {t} never saw the unload");
                    // Read the flag before the call: a call that starts after the unload
                    // returned must be refused; one in flight may still finish.
                    let after_unload = unloaded.load(Ordering::SeqCst);
                    match recommend(&db, "busy") {
                        Ok(answer) => {
                            assert_eq!(&answer, serial, "thread {t}: a call in flight");
                            assert!(!after_unload, "thread {t}: answered after the unload");
                            answered.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(e) => {
                            let text = e.to_string();
                            assert!(text.contains("no model named 'busy'"), "thread {t}: {text}");
                            refused.fetch_add(1, Ordering::SeqCst);
                            break;
                        }
                    }
                }
            });
        }
        while answered.load(Ordering::SeqCst) < 20 {
            std::thread::sleep(Duration::from_millis(5));
        }
        unload(&db, "busy");
        unloaded.store(true, Ordering::SeqCst);
    });
    assert_eq!(refused.load(Ordering::SeqCst), 4);
    // The name is free again and a reloaded model answers as before.
    load(&db, "busy", &path);
    assert_eq!(recommend(&db, "busy").unwrap(), serial);
    unload(&db, "busy");
}

#[test]
fn memory_returns_after_unload() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // 512 × 8 layers in F32: about 100 MiB of weights, far above allocator noise.
    let path = model_file("large", 512, 8);
    let file_mib = std::fs::metadata(&path).unwrap().len() as f64 / (1 << 20) as f64;
    let db = common::connect(None);
    // One load/unload first, so the backend's one-time start-up counts in the baseline.
    load(&db, "warm-up", &path);
    recommend(&db, "warm-up").unwrap();
    unload(&db, "warm-up");
    let baseline = rss_mib();
    let mut loaded = Vec::new();
    let mut after = Vec::new();
    for cycle in 0..5 {
        let name = format!("large-{cycle}");
        load(&db, &name, &path);
        recommend(&db, &name).unwrap();
        loaded.push(rss_mib());
        unload(&db, &name);
        after.push(rss_mib());
    }
    eprintln!(
        "model file {file_mib:.1} MiB; RSS baseline {baseline:.1} MiB, loaded {loaded:.1?}, after unload {after:.1?}"
    );
    for (cycle, (&l, &a)) in loaded.iter().zip(&after).enumerate() {
        assert!(
            l - baseline > 0.8 * file_mib,
            "cycle {cycle}: the model is not resident ({l:.1} vs baseline {baseline:.1} MiB)"
        );
        // The weights leave with the model. glibc may keep a freed compute buffer in its heap
        // (its mmap threshold rises after the first large free: measured 18 or 45 MiB after
        // unload from run to run), so the bound is on the weights, not on the allocator.
        assert!(
            l - a > 0.8 * file_mib,
            "cycle {cycle}: unloading freed only {:.1} MiB of a {file_mib:.1} MiB model",
            l - a
        );
        assert!(
            a - baseline < 0.5 * file_mib,
            "cycle {cycle}: {:.1} MiB still held after unload",
            a - baseline
        );
    }
    // Nothing accumulates: a leak would put the last cycle above every earlier one (the
    // allocator's one retained buffer comes and goes, it does not add up).
    let earlier = after[..after.len() - 1]
        .iter()
        .copied()
        .fold(f64::MIN, f64::max);
    let last = after[after.len() - 1];
    assert!(
        last < earlier + 2.0,
        "RSS after unload keeps growing: {after:.1?} MiB"
    );
}
