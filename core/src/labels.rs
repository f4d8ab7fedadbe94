//! MovieLens code → text tables. The paper feeds values "in text format, rather than in
//! encoded format", so loaders turn ML-1M's codes into the README's labels.

/// ML-1M age code → range label (ML-1M README, "Age is chosen from the following ranges").
pub fn ml1m_age(code: u32) -> Option<&'static str> {
    Some(match code {
        1 => "Under 18",
        18 => "18-24",
        25 => "25-34",
        35 => "35-44",
        45 => "45-49",
        50 => "50-55",
        56 => "56+",
        _ => return None,
    })
}

/// An age in years → the ML-1M range label, so ML-100K users read like ML-1M users.
pub fn age_range(years: u32) -> &'static str {
    match years {
        0..=17 => "Under 18",
        18..=24 => "18-24",
        25..=34 => "25-34",
        35..=44 => "35-44",
        45..=49 => "45-49",
        50..=55 => "50-55",
        _ => "56+",
    }
}

const ML1M_OCCUPATIONS: [&str; 21] = [
    "other",
    "academic/educator",
    "artist",
    "clerical/admin",
    "college/grad student",
    "customer service",
    "doctor/health care",
    "executive/managerial",
    "farmer",
    "homemaker",
    "K-12 student",
    "lawyer",
    "programmer",
    "retired",
    "sales/marketing",
    "scientist",
    "self-employed",
    "technician/engineer",
    "tradesman/craftsman",
    "unemployed",
    "writer",
];

/// ML-1M occupation code (0–20) → label.
pub fn ml1m_occupation(code: u32) -> Option<&'static str> {
    ML1M_OCCUPATIONS.get(code as usize).copied()
}

/// `M`/`F` → `male`/`female`; anything else is kept as given.
pub fn gender(code: &str) -> String {
    match code {
        "M" => "male".into(),
        "F" => "female".into(),
        other => other.into(),
    }
}

/// ML-100K occupation names are already text; `none` means not given.
pub fn ml100k_occupation(name: &str) -> &str {
    if name == "none" {
        "other"
    } else {
        name
    }
}

/// The release year from a MovieLens title such as `Toy Story (1995)`.
pub fn title_year(title: &str) -> Option<i32> {
    let open = title.trim_end().strip_suffix(')')?.rfind('(')?;
    let inside = &title.trim_end()[open + 1..title.trim_end().len() - 1];
    inside.parse().ok().filter(|y| (1800..2200).contains(y))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables() {
        assert_eq!(ml1m_age(25), Some("25-34"));
        assert_eq!(ml1m_age(2), None);
        assert_eq!(age_range(24), "18-24");
        assert_eq!(age_range(7), "Under 18");
        assert_eq!(ml1m_occupation(12), Some("programmer"));
        assert_eq!(ml1m_occupation(21), None);
        assert_eq!(gender("F"), "female");
        assert_eq!(title_year("City of Lost Children, The (1995)"), Some(1995));
        assert_eq!(title_year("Brooklyn (Sur)"), None);
    }
}
