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

#[cfg(test)]
mod tests {
    use super::*;

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
