//! Measures rank() latency with 1, 2 and 8 calling threads on one model.
//!   cargo run --release -p kvrec-llm --example contention -- model.gguf
use std::time::Instant;

use kvrec_core::options::Options;
use kvrec_core::Request;

fn main() {
    let path = std::env::args()
        .nth(1)
        .expect("usage: contention <model.gguf>");
    kvrec_llm::registry::load("m", &path, &Options::default()).unwrap();
    let model = kvrec_llm::registry::get("m").unwrap();
    let request = Request::from_json_texts(
        r#"{"gender":"female"}"#,
        r#"[{"title":"Toy Story (1995)","rating":5}]"#,
        r#"[{"id":1193,"title":"A"},{"id":661,"title":"B"},{"id":914,"title":"C"}]"#,
    )
    .unwrap();
    for threads in [1, 2, 8] {
        let start = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    for _ in 0..40 / threads {
                        kvrec_llm::rank(
                            &model,
                            &request,
                            &Options::default(),
                            &kvrec_llm::Cancel::none(),
                        )
                        .unwrap();
                    }
                });
            }
        });
        println!(
            "{threads} threads: {:.1} ms/call",
            start.elapsed().as_secs_f64() * 1e3 / 40.0
        );
    }
}
