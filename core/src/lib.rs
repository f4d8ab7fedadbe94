//! kvrec's pure core, shared by the SQL extensions and the `finetune` crate.
//!
//! Structured key-value data (user attributes, viewing history, candidates) is rendered through
//! the InstructMK template (arXiv 2310.16409) into an instruction prompt: [`request`] parses it,
//! [`template`] renders it, [`answer`] writes and parses the ranked answer, [`augment`] makes the
//! paper's augmented copies. Nothing here touches a database or a model, and nothing links
//! SQLite, so any host (a test, a CLI with its own SQLite) can use it.

pub mod answer;
pub mod augment;
pub mod cowatch;
pub mod error;
pub mod fuzz_harness;
pub mod item_ids;
pub mod labels;
pub mod options;
pub mod request;
pub mod rng;
pub mod template;

pub use answer::{parse_answer, target_ids, ParsedAnswer};
pub use augment::{augment, augment_dataset, Augmented, Strategy};
pub use error::{KvrecError, Result};
pub use item_ids::{ItemId, ItemIds};
pub use request::Request;
pub use template::TemplateSpec;
