//! No crate's modules use each other in a circle (scripts/module_cycles.py reads the `crate::`
//! and `super::` paths each module names): the layering core → llm → extension / finetune
//! holds inside each crate too, so a module can be read, and changed, after the ones it uses.

use kvrec_test_support as common;

#[test]
fn no_module_graph_has_a_circle() {
    let root = common::repo_root();
    let out = std::process::Command::new("python3")
        .arg(root.join("scripts/module_cycles.py"))
        .args([
            "src",
            "core/src",
            "llm/src",
            "evaluation/src",
            "finetune/src",
            "test-support/src",
        ])
        .current_dir(&root)
        .output()
        .expect("python3 runs");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(said.matches(": 0 circles").count(), 6, "{said}");
}
