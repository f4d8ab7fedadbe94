//! `kvrec_version()`, `kvrec_debug()` and `kvrec_template()`.

use super::call::{Args, Output};
use kvrec_core::error::Result;
use kvrec_core::template::{TemplateSpec, TEMPLATE_FORMAT, TEMPLATE_VERSION};

pub fn version(_: &Args) -> Result<Output> {
    Ok(Output::Text(format!("v{}", env!("CARGO_PKG_VERSION"))))
}

/// Build facts a bug report needs.
pub fn debug(_: &Args) -> Result<Output> {
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    Ok(Output::Text(format!(
        "kvrec v{version}\n\
         template: {TEMPLATE_FORMAT} v{TEMPLATE_VERSION}\n\
         build: {profile}, {arch}-{os}\n\
         sqlite binding: sqlite-loadable 0.0.6-alpha.6",
        version = env!("CARGO_PKG_VERSION"),
        arch = std::env::consts::ARCH,
        os = std::env::consts::OS,
    )))
}

/// The default template spec as JSON: the starting point for `options.template`.
pub fn template(_: &Args) -> Result<Output> {
    Ok(Output::Text(TemplateSpec::default().to_json().to_string()))
}
