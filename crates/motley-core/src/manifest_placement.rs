//! A document's `placement` beyond `require`: preferences, affinities (inside the
//! document's namespace) and spreads.

use crate::selector::Selector;

use super::{Document, ManifestError};

/// Checks selectors and rules in `placement` beyond `require`.
pub(super) fn validate(doc: &Document, errors: &mut Vec<ManifestError>) {
    let p = doc.spec.placement();
    for (i, pref) in p.prefer.iter().enumerate() {
        if let Err(e) = Selector::parse(&pref.selector) {
            errors.push(doc.error_at(&format!("placement.prefer.{i}.selector"), e.to_string()));
        }
        if !(-100..=100).contains(&pref.weight) {
            errors.push(doc.error_at(
                &format!("placement.prefer.{i}.weight"),
                "must be between -100 and 100",
            ));
        }
    }
    for (field, list) in [
        ("affinity", &p.affinity),
        ("anti_affinity", &p.anti_affinity),
    ] {
        for (i, a) in list.iter().enumerate() {
            if a.workload.namespace != doc.spec.namespace() {
                errors.push(doc.error_at(
                    &format!("placement.{field}.{i}.workload"),
                    format!(
                        "must name a workload of namespace {} (references stay inside it)",
                        doc.spec.namespace()
                    ),
                ));
            }
            if !a.workload.kind.is_workload() {
                errors.push(doc.error_at(
                    &format!("placement.{field}.{i}.workload"),
                    "must name a service, job or daemon",
                ));
            }
            if a.topology.as_deref().is_some_and(str::is_empty) {
                errors.push(doc.error_at(
                    &format!("placement.{field}.{i}.topology"),
                    "must be a node label key",
                ));
            }
        }
    }
    for (i, sp) in p.spread.iter().enumerate() {
        if sp.key.is_empty() {
            errors.push(doc.error_at(
                &format!("placement.spread.{i}.key"),
                "must be a node label key",
            ));
        }
        if sp.max_skew == 0 {
            errors.push(doc.error_at(
                &format!("placement.spread.{i}.max_skew"),
                "must be at least 1",
            ));
        }
    }
}
