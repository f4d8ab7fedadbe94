//! kvrec: LLM-based recommendation inside the databases people already use.
//!
//! Structured key-value data (user attributes, viewing history, candidates) is rendered through
//! the InstructMK template (arXiv 2310.16409) into an instruction prompt; a fine-tuned model
//! ranks the candidates. This crate holds the pure core shared by the SQL extensions and the
//! `finetune` crate — [`request`], [`template`], [`answer`], [`augment`] — and the SQLite
//! loadable extension (entry point `sqlite3_kvrec_init`).

pub mod answer;
pub mod augment;
pub mod error;
pub mod labels;
pub mod options;
pub mod request;
pub mod rng;
pub mod template;

mod sqlite;

pub use answer::{parse_answer, target_ids, ParsedAnswer};
pub use augment::{augment, augment_dataset, Augmented, Strategy};
pub use error::{KvrecError, Result};
pub use request::Request;
pub use template::TemplateSpec;
