//! The documentation stays true to the code: docs/sql.md's function table is generated from
//! the catalog the extension registers (`KVREC_UPDATE_DOCS=1 cargo test --test docs` rewrites
//! it), every relative link in the README and docs/ resolves to a file of the repository, and
//! the README stays a short path for a user.

use kvrec_test_support as common;

use std::path::{Path, PathBuf};

const CATALOG_START: &str =
    "<!-- catalog: generated from kvrec_functions() by tests/docs.rs (KVREC_UPDATE_DOCS=1 rewrites it) -->";
const CATALOG_END: &str = "<!-- end of catalog -->";

/// `name(a, b [, c [, d]])`, with a leading optional parameter as `name([model,] a, …)`.
fn signature(name: &str, params: &[String]) -> String {
    let mut out = format!("{name}(");
    let mut rest = params;
    if let Some(first) = params.first().filter(|p| p.ends_with('?')) {
        if params.len() > 1 && !params[1].ends_with('?') {
            out.push_str(&format!("[{},] ", first.trim_end_matches('?')));
            rest = &params[1..];
        }
    }
    let required: Vec<&str> = rest
        .iter()
        .filter(|p| !p.ends_with('?'))
        .map(String::as_str)
        .collect();
    out.push_str(&required.join(", "));
    let optional: Vec<&str> = rest
        .iter()
        .filter(|p| p.ends_with('?'))
        .map(|p| p.trim_end_matches('?'))
        .collect();
    for (i, p) in optional.iter().enumerate() {
        // `f([a])` alone, `f(x [, a])` after a parameter.
        let lead = if required.is_empty() && i == 0 {
            "["
        } else {
            " [, "
        };
        out.push_str(&format!("{lead}{p}"));
    }
    out.push_str(&"]".repeat(optional.len()));
    out.push(')');
    out
}

/// The function table, from what the extension itself reports.
fn catalog_table() -> String {
    let db = common::connect(None);
    let mut stmt = db
        .prepare("SELECT name, type, params, returns, reads_models, doc FROM kvrec_functions()")
        .unwrap();
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, String>(5)?,
            ))
        })
        .unwrap()
        .map(Result::unwrap);
    let mut out = String::from("| function | returns | reads models |\n|---|---|---|\n");
    for (name, kind, params, returns, reads_models, doc) in rows {
        let params: Vec<String> = serde_json::from_str(&params).unwrap();
        let returns = if kind == "table" {
            let columns: Vec<String> = serde_json::from_str(&returns).unwrap();
            let names: Vec<&str> = columns
                .iter()
                .map(|c| c.split(' ').next().unwrap_or(c))
                .collect();
            format!("table, {doc}: `{}`", names.join(", "))
        } else {
            doc
        };
        let reads = if reads_models == 1 { "yes" } else { "" };
        out.push_str(&format!(
            "| `{}` | {returns} | {reads} |\n",
            signature(&name, &params)
        ));
    }
    out
}

#[test]
fn the_sql_page_lists_the_catalog_as_the_extension_registers_it() {
    let path = common::repo_root().join("docs/sql.md");
    let page = std::fs::read_to_string(&path).unwrap();
    let start = page
        .find(CATALOG_START)
        .expect("docs/sql.md has the catalog markers")
        + CATALOG_START.len();
    let end = page
        .find(CATALOG_END)
        .expect("docs/sql.md has the end marker");
    let generated = format!("\n{}", catalog_table());
    if page[start..end] != generated {
        if std::env::var_os("KVREC_UPDATE_DOCS").is_some() {
            let updated = format!("{}{generated}{}", &page[..start], &page[end..]);
            std::fs::write(&path, updated).unwrap();
            return;
        }
        panic!(
            "docs/sql.md's function table is not the catalog's; run KVREC_UPDATE_DOCS=1 cargo test --test docs\n{generated}"
        );
    }
}

#[test]
fn signatures_mark_optional_parameters() {
    let p = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(
        signature(
            "recommend",
            &p(&["model?", "user", "history", "candidates", "options?"])
        ),
        "recommend([model,] user, history, candidates [, options])"
    );
    assert_eq!(
        signature("f", &p(&["a", "copies?", "options?"])),
        "f(a [, copies [, options]])"
    );
    assert_eq!(signature("kvrec_version", &[]), "kvrec_version()");
}

/// The markdown files a reader follows: the README, docs/ and the model card.
fn pages(root: &Path) -> Vec<PathBuf> {
    let mut pages = vec![root.join("README.md"), root.join("models/README.md")];
    let mut dirs = vec![root.join("docs")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                pages.push(path);
            }
        }
    }
    pages
}

/// The targets of `[text](target)` links in markdown, outside code blocks.
fn link_targets(text: &str) -> Vec<String> {
    let mut targets = Vec::new();
    let mut in_code = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(close) = after.find(')') else { break };
            targets.push(after[..close].to_string());
            rest = &after[close..];
        }
    }
    targets
}

#[test]
fn every_link_of_the_docs_resolves_inside_the_repository() {
    let root = common::repo_root().canonicalize().unwrap();
    let mut broken = Vec::new();
    let mut checked = 0;
    for page in pages(&root) {
        let text = std::fs::read_to_string(&page).unwrap();
        for target in link_targets(&text) {
            if target.contains("://") || target.starts_with('#') || target.starts_with("mailto:") {
                continue;
            }
            let file = target.split('#').next().unwrap();
            let resolved = page.parent().unwrap().join(file);
            checked += 1;
            match resolved.canonicalize() {
                Ok(found) if found.starts_with(&root) => {}
                Ok(_) => broken.push(format!(
                    "{}: {target} leaves the repository",
                    page.display()
                )),
                Err(_) => broken.push(format!("{}: {target} does not exist", page.display())),
            }
        }
    }
    assert!(checked > 50, "only {checked} links found");
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn the_readme_stays_a_short_path() {
    let readme = std::fs::read_to_string(common::repo_root().join("README.md")).unwrap();
    let lines = readme.lines().count();
    assert!(
        lines <= 200,
        "README.md has {lines} lines; reference belongs in docs/"
    );
    // The two set-up commands of a fresh machine: the demo and the tests.
    assert!(readme.contains("bash examples/demo.sh") && readme.contains("bash .ci/run"));
}
