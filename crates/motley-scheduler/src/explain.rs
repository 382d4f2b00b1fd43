//! Refusal texts: one reason per node, and a summary counted by reason.

use std::collections::BTreeMap;

use motley_core::selector::Requirement;

/// A selector requirement a node fails, said the way a person would:
/// `arch not in (arm64)`, `no label rack`, `cpu.score not > 1500`.
pub fn mismatch(r: &Requirement) -> String {
    match r {
        Requirement::Exists(k) => format!("no label {k}"),
        Requirement::NotExists(k) => format!("has label {k}"),
        Requirement::Eq(k, v) => format!("{k} is not {v}"),
        Requirement::NotEq(k, v) => format!("{k} is {v}"),
        Requirement::In(k, vs) => format!("{k} not in ({})", vs.join(", ")),
        Requirement::NotIn(k, vs) => format!("{k} in ({})", vs.join(", ")),
        Requirement::Cmp(k, op, n) => format!("{k} not {} {n}", op.as_str()),
    }
}

/// The part of a reason that is the same on every node it applies to: the numbers in
/// `insufficient memory (512Mi free < 1Gi requested)` and the effect in
/// `tainted motley.io/thermal (evict)` differ from node to node and are left out.
pub fn summary_key(reason: &str) -> &str {
    // `image has linux/amd64; pi3 is linux/arm/v7`: the node's part differs.
    if reason.starts_with("image has ") {
        return reason.split("; ").next().unwrap_or(reason);
    }
    let strip = ["insufficient ", "tainted ", "no free ", "volume "];
    if strip.iter().any(|p| reason.starts_with(p)) {
        reason.split(" (").next().unwrap_or(reason)
    } else {
        reason
    }
}

/// Summarizes refusals: `0/3 nodes: 2 insufficient memory, 1 not ready`, most common first.
pub fn summarize(total: usize, reasons: &[(String, String)]) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, r) in reasons {
        *counts.entry(summary_key(r)).or_default() += 1;
    }
    let mut parts: Vec<(usize, &str)> = counts.into_iter().map(|(k, v)| (v, k)).collect();
    parts.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
    let parts: Vec<String> = parts.iter().map(|(n, r)| format!("{n} {r}")).collect();
    if parts.is_empty() {
        format!("0/{total} nodes available")
    } else {
        format!("0/{total} nodes: {}", parts.join(", "))
    }
}

/// The refusals of one placement as a node × reason matrix (the dashboard's view of a
/// pending workload): the reasons are the summary's (most common first, as
/// [`summarize`] counts them), each node's row has one cell filled, with the part of
/// its reason particular to that node (`1Gi free < 2Gi requested`, or the whole reason
/// when nothing differs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matrix {
    /// Column headings: reasons as the summary says them, with how many nodes each.
    pub reasons: Vec<(String, usize)>,
    /// Rows: node, the column it is refused under, and the detail.
    pub rows: Vec<(String, usize, String)>,
}

/// Builds the [`Matrix`] of `(node, reason)` refusals, rows in node order.
pub fn matrix(nodes: &[(String, String)]) -> Matrix {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, r) in nodes {
        *counts.entry(summary_key(r)).or_default() += 1;
    }
    let mut reasons: Vec<(&str, usize)> = counts.into_iter().collect();
    reasons.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let mut rows: Vec<(String, usize, String)> = nodes
        .iter()
        .map(|(node, r)| {
            let key = summary_key(r);
            let col = reasons.iter().position(|(k, _)| *k == key).unwrap_or(0);
            let detail = r[key.len()..]
                .trim_start_matches(';')
                .trim()
                .trim_start_matches('(')
                .trim_end_matches(')')
                .trim();
            let detail = if detail.is_empty() {
                r.as_str()
            } else {
                detail
            };
            (node.clone(), col, detail.to_string())
        })
        .collect();
    rows.sort();
    Matrix {
        reasons: reasons
            .into_iter()
            .map(|(k, n)| (k.to_string(), n))
            .collect(),
        rows,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_matrix_has_a_column_per_reason_and_a_cell_per_node() {
        let r = |n: &str, w: &str| (n.to_string(), w.to_string());
        let m = matrix(&[
            r("c", "insufficient memory (0 free < 2Gi requested)"),
            r("a", "insufficient memory (1Gi free < 2Gi requested)"),
            r("b", "not ready"),
            r("d", "image has linux/amd64; d is linux/arm/v7"),
        ]);
        assert_eq!(
            m.reasons,
            [
                ("insufficient memory".to_string(), 2),
                ("image has linux/amd64".to_string(), 1),
                ("not ready".to_string(), 1),
            ]
        );
        assert_eq!(
            m.rows,
            [
                ("a".to_string(), 0, "1Gi free < 2Gi requested".to_string()),
                ("b".to_string(), 2, "not ready".to_string()),
                ("c".to_string(), 0, "0 free < 2Gi requested".to_string()),
                ("d".to_string(), 1, "d is linux/arm/v7".to_string()),
            ]
        );
        assert_eq!(matrix(&[]).rows, []);
    }

    #[test]
    fn summary_counts_by_reason_without_numbers() {
        let r = |n: &str, w: &str| (n.to_string(), w.to_string());
        let s = summarize(
            7,
            &[
                r("a", "insufficient memory (1Gi free < 2Gi requested)"),
                r("b", "insufficient memory (512Mi free < 2Gi requested)"),
                r("c", "insufficient memory (0 free < 2Gi requested)"),
                r("d", "tainted motley.io/undervoltage (no-schedule)"),
                r("e", "tainted motley.io/undervoltage (no-schedule)"),
                r("f", "arch not in (arm64)"),
                r("g", "arch not in (arm64)"),
            ],
        );
        assert_eq!(
            s,
            "0/7 nodes: 3 insufficient memory, 2 arch not in (arm64), 2 tainted motley.io/undervoltage"
        );
        assert_eq!(summarize(0, &[]), "0/0 nodes available");
    }

    #[test]
    fn mismatch_texts() {
        use motley_core::selector::Selector;
        let texts: Vec<String> =
            Selector::parse("arch in (arm64), rack, !gpu, cpu.score > 1500, zone=a")
                .map(|s| s.requirements().iter().map(mismatch).collect())
                .unwrap_or_default();
        assert_eq!(
            texts,
            [
                "arch not in (arm64)",
                "no label rack",
                "has label gpu",
                "cpu.score not > 1500",
                "zone is not a"
            ]
        );
    }
}
