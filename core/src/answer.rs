//! The answer side of the template: the training target for a known positive, and the parser
//! that turns generated text back into candidate ids (the paper's Error Rate comes from here).

use serde::Serialize;

use crate::error::Result;
use crate::request::Request;

/// The ranked list a model is trained to produce: the positive first, then the other
/// candidates in input order (the paper's label; SO augmentation permutes the tail).
pub fn target_ids(request: &Request, positive: i64) -> Result<Vec<i64>> {
    request.check_positive(positive)?;
    let mut ids = Vec::with_capacity(request.candidates.len());
    ids.push(positive);
    ids.extend(
        request
            .candidate_ids()
            .into_iter()
            .filter(|&id| id != positive),
    );
    Ok(ids)
}

/// What a generated answer said, and whether it is a valid ranking of the candidates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParsedAnswer {
    /// Candidate ids in the order generated, each once.
    pub ids: Vec<i64>,
    /// Tokens that are not a candidate id (hallucinated ids or other text).
    pub invalid: Vec<String>,
    /// Candidate ids generated more than once (counted from the second time).
    pub duplicates: Vec<i64>,
    /// Candidates the answer never named.
    pub missing: Vec<i64>,
    /// True when every token is a distinct candidate id and at least one was given.
    /// Missing candidates do not make an answer invalid: a ranking may be cut short.
    pub valid: bool,
}

/// Parses generated text into candidate ids. The answer ends at the first blank line or
/// section header; ids may be separated by commas, semicolons, whitespace or newlines.
pub fn parse_answer(text: &str, candidates: &[i64]) -> ParsedAnswer {
    let end = [text.find("\n\n"), text.find("###")]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(text.len());
    let mut ids = Vec::new();
    let mut invalid = Vec::new();
    let mut duplicates = Vec::new();
    for token in text[..end]
        .split(|c: char| c == ',' || c == ';' || c.is_whitespace())
        .map(|t| t.trim_end_matches('.'))
        .filter(|t| !t.is_empty())
    {
        match token.parse::<i64>() {
            Ok(id) if candidates.contains(&id) => {
                if ids.contains(&id) {
                    duplicates.push(id);
                } else {
                    ids.push(id);
                }
            }
            _ => invalid.push(token.chars().take(64).collect()),
        }
    }
    let missing = candidates
        .iter()
        .copied()
        .filter(|id| !ids.contains(id))
        .collect();
    let valid = !ids.is_empty() && invalid.is_empty() && duplicates.is_empty();
    ParsedAnswer {
        ids,
        invalid,
        duplicates,
        missing,
        valid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_valid_and_invalid_answers() {
        let c = [10, 20, 30];
        let ok = parse_answer("20, 10, 30\n\n### Instruction: junk 99", &c);
        assert_eq!(ok.ids, [20, 10, 30]);
        assert!(ok.valid);
        let bad = parse_answer("20, 99, 20, Toy", &c);
        assert_eq!(bad.ids, [20]);
        assert_eq!(bad.invalid, ["99", "Toy"]);
        assert_eq!(bad.duplicates, [20]);
        assert_eq!(bad.missing, [10, 30]);
        assert!(!bad.valid);
        assert!(!parse_answer("", &c).valid);
        assert!(parse_answer("-5;7.", &[-5, 7]).valid);
    }
}
