//! `kvrec_version()`, `kvrec_debug()` and `kvrec_template()`.

use super::SqlArgs;
use kvrec_core::error::Result;
use kvrec_core::template::{TemplateSpec, TEMPLATE_FORMAT, TEMPLATE_VERSION};

pub fn version(_: &dyn SqlArgs) -> Result<String> {
    Ok(format!("v{}", env!("CARGO_PKG_VERSION")))
}

/// Build facts a bug report needs.
pub fn debug(_: &dyn SqlArgs) -> Result<String> {
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let features: Vec<&str> = [
        ("cuda", cfg!(feature = "cuda")),
        ("vulkan", cfg!(feature = "vulkan")),
        ("dynamic-backends", cfg!(feature = "dynamic-backends")),
    ]
    .into_iter()
    .filter_map(|(name, on)| on.then_some(name))
    .collect();
    let devices = kvrec_llm::devices();
    Ok(format!(
        "kvrec v{version}\n\
         template: {TEMPLATE_FORMAT} v{TEMPLATE_VERSION}\n\
         build: {profile}, {arch}-{os}, features: [{features}]\n\
         sqlite binding: sqlite-loadable 0.0.6-alpha.6\n\
         llama.cpp: llama-cpp-2 0.1.160\n\
         devices: {devices}\n\
         caps: {caps}{sealed}",
        version = env!("CARGO_PKG_VERSION"),
        arch = std::env::consts::ARCH,
        os = std::env::consts::OS,
        features = features.join(", "),
        caps = serde_json::to_string(&kvrec_llm::limits::get()).unwrap_or_default(),
        sealed = if kvrec_llm::limits::is_sealed() {
            " (sealed by the host)"
        } else {
            ""
        },
        devices = if devices.is_empty() {
            "none found".into()
        } else {
            devices.join("; ")
        },
    ))
}

/// The default template spec as JSON: the starting point for `options.template`.
pub fn template(_: &dyn SqlArgs) -> Result<String> {
    Ok(TemplateSpec::default().to_json().to_string())
}
