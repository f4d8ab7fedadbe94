//! The one markdown table writer of the reports (`eval`, `eval --catalog`, `bench`, `fit`).

/// A markdown table: the header, its rule, and one line per row of already formatted cells.
pub fn markdown<S: AsRef<str>>(header: &[&str], rows: impl IntoIterator<Item = Vec<S>>) -> String {
    let mut out = format!(
        "| {} |\n|{}\n",
        header.join(" | "),
        "---|".repeat(header.len())
    );
    for row in rows {
        let cells: Vec<&str> = row.iter().map(AsRef::as_ref).collect();
        out.push_str(&format!("| {} |\n", cells.join(" | ")));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_header_a_rule_and_a_line_per_row() {
        let table = super::markdown(&["a", "b"], [vec!["1", "2"], vec!["3", "4"]]);
        assert_eq!(table, "| a | b |\n|---|---|\n| 1 | 2 |\n| 3 | 4 |\n");
    }
}
