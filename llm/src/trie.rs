//! The candidates' answer prefixes as a token trie, and scores constrained to the candidates.
//!
//! A candidate's score is the log-probability that the answer starts with it when the model may
//! only choose among the candidates: at every node where candidates part ways the model's
//! probabilities are renormalised over the children, and a node with a single child
//! contributes nothing. The scores' exponentials sum to 1, and only the branching nodes need a
//! logits row — for ten 4-digit ids a handful of tokens rather than fifty.

use std::collections::HashMap;

/// One token of one or more candidates' prefixes, at `depth` (0 = the first answer token).
#[derive(Debug, Clone, PartialEq)]
pub struct TrieNode {
    pub parent: Option<usize>,
    pub token: i32,
    pub depth: usize,
    pub children: Vec<usize>,
}

/// A node whose next-token distribution is read: `None` is the root (the prompt's last token).
pub type At = Option<usize>;

#[derive(Debug, Clone, PartialEq)]
pub struct CandidateTrie {
    pub nodes: Vec<TrieNode>,
    pub root_children: Vec<usize>,
    /// Each candidate's path, one node per token.
    pub paths: Vec<Vec<usize>>,
}

impl CandidateTrie {
    pub fn new(sequences: &[Vec<i32>]) -> CandidateTrie {
        let mut trie = CandidateTrie {
            nodes: Vec::new(),
            root_children: Vec::new(),
            paths: Vec::with_capacity(sequences.len()),
        };
        for tokens in sequences {
            let mut path = Vec::with_capacity(tokens.len());
            let mut parent: Option<usize> = None;
            for (depth, &token) in tokens.iter().enumerate() {
                let siblings = match parent {
                    None => &trie.root_children,
                    Some(p) => &trie.nodes[p].children,
                };
                let node = match siblings.iter().find(|&&c| trie.nodes[c].token == token) {
                    Some(&c) => c,
                    None => {
                        trie.nodes.push(TrieNode {
                            parent,
                            token,
                            depth,
                            children: Vec::new(),
                        });
                        let c = trie.nodes.len() - 1;
                        match parent {
                            None => trie.root_children.push(c),
                            Some(p) => trie.nodes[p].children.push(c),
                        }
                        c
                    }
                };
                path.push(node);
                parent = Some(node);
            }
            trie.paths.push(path);
        }
        trie
    }

    fn children(&self, at: At) -> &[usize] {
        match at {
            None => &self.root_children,
            Some(n) => &self.nodes[n].children,
        }
    }

    /// Whether the model's choice at `at` matters: more than one child.
    pub fn branches(&self, at: At) -> bool {
        self.children(at).len() > 1
    }

    /// The nodes (not the root) whose logits are needed: those that branch.
    pub fn branching(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&n| self.branches(Some(n)))
            .collect()
    }

    /// The nodes that must be decoded to read every branching node's logits: the branching
    /// nodes and their ancestors, parents before children.
    pub fn to_decode(&self) -> Vec<usize> {
        let mut keep = vec![false; self.nodes.len()];
        for n in self.branching() {
            let mut at = Some(n);
            while let Some(node) = at {
                if keep[node] {
                    break;
                }
                keep[node] = true;
                at = self.nodes[node].parent;
            }
        }
        // Nodes are created after their parents, so index order is parents first.
        (0..self.nodes.len()).filter(|&n| keep[n]).collect()
    }

    /// The node and its ancestors, root side first.
    pub fn lineage(&self, node: usize) -> Vec<usize> {
        let mut line = vec![node];
        while let Some(p) = self.nodes[*line.last().unwrap()].parent {
            line.push(p);
        }
        line.reverse();
        line
    }

    /// Constrained log-probability of each candidate. `logit(at, token)` is the model's logit
    /// (or log-probability: the difference cancels) of `token` following `at`; it is only asked
    /// for at branching nodes.
    pub fn scores(&self, mut logit: impl FnMut(At, i32) -> f64) -> Vec<f64> {
        let mut log_probs: HashMap<usize, f64> = HashMap::new();
        let mut at_nodes: Vec<At> = vec![None];
        at_nodes.extend(self.branching().into_iter().map(Some));
        for at in at_nodes {
            let children = self.children(at);
            if children.len() < 2 {
                continue;
            }
            let values: Vec<f64> = children
                .iter()
                .map(|&c| logit(at, self.nodes[c].token))
                .collect();
            let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let lse = max + values.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
            for (&c, v) in children.iter().zip(values) {
                log_probs.insert(c, v - lse);
            }
        }
        self.paths
            .iter()
            .map(|path| path.iter().filter_map(|n| log_probs.get(n)).sum())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ids as digit tokens plus a ',' terminator (token 10).
    fn digits(ids: &[&str]) -> Vec<Vec<i32>> {
        ids.iter()
            .map(|s| {
                let mut t: Vec<i32> = s.bytes().map(|b| i32::from(b - b'0')).collect();
                t.push(10);
                t
            })
            .collect()
    }

    #[test]
    fn shared_prefixes_share_nodes_and_only_branch_points_are_decoded() {
        let trie = CandidateTrie::new(&digits(&["1234", "1299", "1200", "345"]));
        // 1-2-{3-4-, 9-9-, 0-0-} and 3-4-5-
        assert_eq!(trie.nodes.len(), 2 + 3 * 3 + 4);
        assert_eq!(trie.root_children.len(), 2);
        let branching = trie.branching();
        assert_eq!(branching.len(), 1, "only the node after '1','2' branches");
        assert_eq!(trie.nodes[branching[0]].depth, 1);
        assert_eq!(trie.to_decode().len(), 2, "'1' and '2' are decoded");
    }

    #[test]
    fn scores_are_a_distribution_over_the_candidates() {
        let trie = CandidateTrie::new(&digits(&["1234", "1299", "1200", "345", "12"]));
        let scores =
            trie.scores(|at, token| (at.map_or(0, |n| n + 1) * 7 + token as usize) as f64 * 0.3);
        let total: f64 = scores.iter().map(|s| s.exp()).sum();
        assert!((total - 1.0).abs() < 1e-9, "{total}");
    }

    #[test]
    fn a_single_candidate_or_unshared_paths_need_no_decoding() {
        let one = CandidateTrie::new(&digits(&["42"]));
        assert!(one.to_decode().is_empty());
        assert_eq!(one.scores(|_, _| unreachable!()), vec![0.0]);
        let apart = CandidateTrie::new(&digits(&["1", "2", "3"]));
        assert!(apart.to_decode().is_empty());
        let s = apart.scores(|_, token| f64::from(token));
        assert!(s[2] > s[1] && s[1] > s[0]);
    }
}
