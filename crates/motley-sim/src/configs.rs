//! Configs in the simulator (issue 26): in half the seeds the operator applies a Config
//! and a service that reads it, then changes the Config a few times through the faults.
//! A change is committed with a rewrite of the service (its stamp), so at convergence
//! the stored service must carry the stored Config's version and every replica the
//! store runs must be of it: the roll went through whatever the faults were. The
//! acknowledged-apply check covers the Config's value too (`value`). Its choices come
//! from a generator of their own, so the rest of each seed's draws are the same.

use std::collections::BTreeMap;
use std::time::Duration;

use motley_core::model::{Allocation, Desired, Spec, Workload};
use tokio::time::Instant;

use crate::rng::Rng;

/// When the operator applies the Config and its user (half the seeds), then changes
/// the Config: times during the fault phase, in order.
pub fn schedule(rng: &Rng, start: Instant, faults_end: Instant) -> Vec<Instant> {
    if !rng.chance(0.5) {
        return Vec::new();
    }
    let mut at = start + rng.between(Duration::from_secs(1), Duration::from_secs(10));
    let mut out = Vec::new();
    for _ in 0..1 + rng.below(4) {
        if at >= faults_end {
            break;
        }
        out.push(at);
        at += rng.between(Duration::from_secs(2), Duration::from_secs(8));
    }
    out
}

/// The `n`th apply (from 1): the Config with value `n`, and (the first time) the
/// service that reads it, as `(name, yaml, value)` for the acknowledged-apply check.
pub fn apply(n: u32) -> (String, String, u32) {
    let config = format!(
        "kind: Config\nname: settings\ndata:\n  n: \"{n}\"\n  app.ini: \"generation = {n}\"\n"
    );
    let yaml = if n == 1 {
        format!(
            "{config}---\nkind: Service\nname: reader\nreplicas: 2\ntask:\n  command: [\"sim\", \"reader\"]\n  resources: {{ cpu: 100m, memory: 16Mi }}\n  configs:\n  - {{ config: settings, key: app.ini, file: /etc/app.ini }}\n  - {{ config: settings, key: n, env: SETTINGS_N }}\n"
        )
    } else {
        config
    };
    ("config/settings".into(), yaml, n)
}

/// The value the acknowledged-apply check compares, of a stored Config.
pub fn value(w: &Workload) -> Option<u32> {
    match &w.spec {
        Spec::Config(c) => c.data.get("n")?.value.as_deref()?.parse().ok(),
        _ => None,
    }
}

/// Not converged while a stored workload's stamp differs from its Config's version as
/// stored, or a replica to run is of another version: the roll is still under way (or
/// stuck, which the settle deadline reports).
pub fn converged(stored: &BTreeMap<String, Workload>, allocs: &[Allocation]) -> Result<(), String> {
    for (name, w) in stored {
        if w.spec.task().configs.is_empty() {
            continue;
        }
        let me = w.spec.reference();
        let current = |config: &str| {
            stored
                .get(
                    &me.sibling(motley_core::model::Kind::Config, config)
                        .to_string(),
                )
                .and_then(|c| match &c.spec {
                    Spec::Config(c) => Some(motley_core::config::version(c)),
                    _ => None,
                })
        };
        for r in &w.spec.task().configs {
            if r.version != current(&r.config) {
                return Err(format!(
                    "{name} is stamped with {} {:?}, the stored one is {:?}",
                    r.config,
                    r.version,
                    current(&r.config)
                ));
            }
        }
        let stale = allocs.iter().find(|a| {
            a.workload_uid == w.uid
                && a.desired == Desired::Run
                && a.is_live()
                && a.task
                    .configs
                    .iter()
                    .any(|r| r.version != current(&r.config))
        });
        if let Some(a) = stale {
            return Err(format!(
                "{name}: {} still runs {}",
                a.id,
                motley_core::config::versions_of(&a.task).join(",")
            ));
        }
    }
    Ok(())
}
