//! What the server decides about what agents tell it: a node's registration (its
//! capacity, labels and taints, merged with what the operator set) and an agent's report
//! folded into a stored allocation. The server reads and writes the store around these.

use std::collections::BTreeMap;

use crate::hw::TaintPolicy;
use crate::model::{AllocState, Allocation, Capacity, Node, NodeFacts};
use crate::proto::AllocReport;
use crate::quantity::{Bytes, MilliCpu};

/// The share of a node's memory kept back for its system (the OS, the agent, caches):
/// workloads may reserve the rest.
pub const MEMORY_RESERVE_PERCENT: u64 = 10;

/// What a node may offer: all CPUs, its memory less [`MEMORY_RESERVE_PERCENT`], and its
/// data disk's size as ephemeral disk (0 when not known).
pub fn capacity(facts: &NodeFacts) -> Capacity {
    let disk = facts
        .hw
        .as_deref()
        .and_then(|h| {
            let name = h.data_disk.as_ref()?.disk.as_deref()?;
            h.disks.iter().find(|d| d.name == name).map(|d| d.size)
        })
        .unwrap_or(0);
    Capacity {
        cpu: MilliCpu(facts.cpus as u64 * 1000),
        // In u128: a node may claim any u64 (found by the agent_session fuzz target:
        // `memory * 10` overflowed, a panic in a debug build, a wrong capacity in release).
        memory: Bytes(
            facts.memory
                - (u128::from(facts.memory) * u128::from(MEMORY_RESERVE_PERCENT) / 100) as u64,
        ),
        disk: Bytes(disk),
    }
}

/// The facts an agent would send for a machine `motley facts -o json` described
/// (`what-if --add-node`): its hardware and conditions; no CPU score (not measured there).
pub fn facts_of(
    hostname: &str,
    hw: crate::hw::Hardware,
    conditions: Vec<crate::hw::Condition>,
) -> NodeFacts {
    NodeFacts {
        arch: hw.arch.clone(),
        os: hw.os.clone(),
        cpus: hw.cpu.logical.max(1),
        memory: hw.memory,
        hostname: hostname.to_string(),
        hw: Some(Box::new(hw)),
        conditions,
        ..Default::default()
    }
}

/// A node as its agent describes it: capacity from its facts; labels its owner gave the
/// agent (never under `motley.io/`, which only discovery writes) plus those derived from
/// its hardware; taints from its conditions under the server's policy. `now` becomes
/// `registered_at` for a node seen the first time ([`merge_registration`] keeps the old).
pub fn registration(
    name: &str,
    facts: NodeFacts,
    user_labels: &BTreeMap<String, String>,
    policy: &TaintPolicy,
    now: u64,
) -> Node {
    let mut labels: BTreeMap<String, String> = user_labels
        .iter()
        .filter(|(k, _)| !k.starts_with(crate::hw::LABEL_PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if let Some(hw) = &facts.hw {
        let logs = facts.task_logs.map_or("disk", |l| l.as_str());
        labels.extend(crate::hw::labels(hw, facts.cpu_score, logs));
    }
    Node {
        name: name.to_string(),
        capacity: capacity(&facts),
        taints: policy.taints(&facts.conditions),
        facts,
        labels,
        operator_labels: BTreeMap::new(),
        cordoned: false,
        draining: false,
        registered_at: now,
    }
}

/// What is wrong with the labels a node offers of itself, given the operator's labels
/// of that node: keys under `motley.io/` (only the server sets them) and keys the
/// operator set (the operator's value wins). Such labels are dropped; the server audits
/// each (a node that claims them is misconfigured or lying to attract work).
pub fn label_claims(
    offered: &BTreeMap<String, String>,
    operator: &BTreeMap<String, String>,
) -> Vec<String> {
    offered
        .iter()
        .filter_map(|(k, v)| {
            if k.starts_with(crate::hw::LABEL_PREFIX) {
                Some(format!(
                    "label {k} (only the server sets motley.io/ labels)"
                ))
            } else {
                match operator.get(k) {
                    Some(o) if o != v => Some(format!(
                        "label {k}={v} (the operator set {k}={o}, which stands)"
                    )),
                    _ => None,
                }
            }
        })
        .collect()
}

/// Applies an operator's label change to a node: `set` then `remove`. Returns the new
/// record, or `None` when nothing changed. Keys under `motley.io/` are refused (the
/// server derives them from facts). Removing an operator label leaves the node's own
/// value, if it offers one, at its next registration.
pub fn relabel(
    node: &Node,
    set: &BTreeMap<String, String>,
    remove: &[String],
) -> Result<Option<Node>, String> {
    for k in set.keys().chain(remove) {
        if k.starts_with(crate::hw::LABEL_PREFIX) {
            return Err(format!(
                "label {k}: motley.io/ labels are set by the server from the node's facts"
            ));
        }
        crate::model::validate_label(k, "")?;
    }
    for (k, v) in set {
        crate::model::validate_label(k, v)?;
    }
    let mut n = node.clone();
    for (k, v) in set {
        n.operator_labels.insert(k.clone(), v.clone());
        n.labels.insert(k.clone(), v.clone());
    }
    for k in remove {
        if n.operator_labels.remove(k).is_some() {
            n.labels.remove(k);
        }
    }
    Ok((n != *node).then_some(n))
}

/// The record to store for a registration, given the stored one: what the operator set
/// (cordon, drain) and the first registration time survive; `None` when nothing changed
/// (no write).
pub fn merge_registration(incoming: &Node, stored: Option<&Node>) -> Option<Node> {
    let Some(old) = stored else {
        return Some(incoming.clone());
    };
    let mut n = incoming.clone();
    n.operator_labels = old.operator_labels.clone();
    n.labels.extend(n.operator_labels.clone());
    n.cordoned = old.cordoned;
    n.draining = old.draining;
    n.registered_at = old.registered_at;
    (n != *old).then_some(n)
}

/// Folds an agent's report into an allocation; returns whether anything changed (and
/// sets `updated_at` to `now` if so). Terminal states are final: a late report cannot
/// bring an allocation back. Restarts never go down; a repeated reason is kept once.
pub fn merge_report(a: &mut Allocation, r: &AllocReport, now: u64) -> bool {
    if a.state.is_terminal() {
        return false;
    }
    let before = a.clone();
    a.state = r.state;
    a.pid = r.pid;
    if r.exit_code.is_some() {
        a.exit_code = r.exit_code;
    }
    a.restarts = a.restarts.max(r.restarts);
    a.health = if r.state == AllocState::Running {
        r.health
    } else {
        None
    };
    if let Some(reason) = &r.reason
        && a.reasons.last() != Some(reason)
    {
        a.push_reason(reason.clone());
    }
    // Chosen ports: only for the ports the agent was to choose, never 0.
    if r.state == AllocState::Running && !r.ports.is_empty() {
        a.ports = r
            .ports
            .iter()
            .filter(|(n, p)| **p != 0 && a.task.ports.iter().any(|t| t.port == 0 && &t.name == *n))
            .map(|(n, p)| (n.clone(), *p))
            .collect();
    }
    a.ready_at = if crate::catalog::serves(a) {
        before.ready_at.or(Some(now))
    } else {
        None
    };
    if *a != before {
        a.updated_at = now;
        true
    } else {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hw::{Condition, ConditionKind, TaintEffect};
    use crate::model::AllocState;

    fn facts(cpus: u32, memory: u64) -> NodeFacts {
        NodeFacts {
            cpus,
            memory,
            ..Default::default()
        }
    }

    #[test]
    fn capacity_keeps_a_tenth_of_memory_for_the_system() {
        let c = capacity(&facts(4, 1000 * 1024 * 1024));
        assert_eq!(c.cpu, MilliCpu(4000));
        assert_eq!(c.memory, Bytes(900 * 1024 * 1024));
        assert_eq!(c.disk, Bytes(0), "no data disk known");
    }

    #[test]
    fn capacity_of_a_node_claiming_the_largest_numbers_does_not_overflow() {
        let c = capacity(&facts(u32::MAX, u64::MAX));
        assert_eq!(c.memory, Bytes(u64::MAX - u64::MAX / 10));
        assert_eq!(c.cpu, MilliCpu(u64::from(u32::MAX) * 1000));
    }

    #[test]
    fn registration_drops_reserved_labels_and_taints_by_policy() {
        let mut user = BTreeMap::new();
        user.insert("zone".to_string(), "attic".to_string());
        user.insert("motley.io/arch".to_string(), "forged".to_string());
        let mut f = facts(2, 1 << 30);
        f.conditions = vec![Condition {
            kind: ConditionKind::Undervoltage,
            since: 5,
            reason: "throttled".into(),
        }];
        let mut policy = TaintPolicy::default();
        policy
            .0
            .insert(ConditionKind::Undervoltage, TaintEffect::NoSchedule);
        let n = registration("pi", f, &user, &policy, 42);
        assert_eq!(n.labels.get("zone").map(String::as_str), Some("attic"));
        assert!(!n.labels.contains_key("motley.io/arch"), "{:?}", n.labels);
        assert_eq!(n.taints.len(), 1, "{:?}", n.taints);
        assert_eq!(n.registered_at, 42);
    }

    #[test]
    fn operator_labels_win_over_the_nodes_and_survive_registration() {
        let policy = TaintPolicy::default();
        let mut own = BTreeMap::new();
        own.insert("trusted".to_string(), "yes".to_string());
        own.insert("zone".to_string(), "attic".to_string());
        let first = registration("pi", facts(2, 1 << 30), &own, &policy, 1);
        let mut set = BTreeMap::new();
        set.insert("trusted".to_string(), "no".to_string());
        let labelled = relabel(&first, &set, &[])
            .expect("valid")
            .expect("a change");
        assert_eq!(labelled.labels["trusted"], "no");
        assert!(relabel(&labelled, &set, &[]).expect("valid").is_none());
        // The node registers again claiming trusted=yes: the operator's value stands.
        let again = registration("pi", facts(2, 1 << 30), &own, &policy, 2);
        let merged = merge_registration(&again, Some(&labelled));
        assert!(merged.is_none(), "nothing changed: {merged:?}");
        let claims = label_claims(&own, &labelled.operator_labels);
        assert_eq!(
            claims,
            vec!["label trusted=yes (the operator set trusted=no, which stands)".to_string()]
        );
        // Removing the operator's label gives the node's own value back at its next
        // registration.
        let unset = relabel(&labelled, &BTreeMap::new(), &["trusted".to_string()])
            .expect("valid")
            .expect("a change");
        assert!(!unset.labels.contains_key("trusted"));
        let merged = merge_registration(&again, Some(&unset)).expect("changed");
        assert_eq!(merged.labels["trusted"], "yes");
        let mut forged = BTreeMap::new();
        forged.insert("motley.io/gpu".to_string(), "8".to_string());
        assert!(relabel(&unset, &forged, &[]).is_err());
        assert_eq!(label_claims(&forged, &BTreeMap::new()).len(), 1);
    }

    #[test]
    fn re_registration_keeps_what_the_operator_set_and_writes_only_on_change() {
        let policy = TaintPolicy::default();
        let first = registration("pi", facts(2, 1 << 30), &BTreeMap::new(), &policy, 1);
        let stored = merge_registration(&first, None);
        let Some(mut stored) = stored else {
            panic!("a new node is written")
        };
        stored.cordoned = true;
        let same = registration("pi", facts(2, 1 << 30), &BTreeMap::new(), &policy, 99);
        assert_eq!(merge_registration(&same, Some(&stored)), None);
        let bigger = registration("pi", facts(4, 1 << 30), &BTreeMap::new(), &policy, 99);
        let Some(merged) = merge_registration(&bigger, Some(&stored)) else {
            panic!("new facts are written")
        };
        assert!(merged.cordoned, "a cordon survives new facts");
        assert_eq!(merged.registered_at, 1);
        assert_eq!(merged.capacity.cpu, MilliCpu(4000));
    }

    fn alloc(state: AllocState) -> Allocation {
        crate::model::test_alloc("web-1", "service/web", state)
    }

    fn report(state: AllocState, restarts: u32, reason: Option<&str>) -> AllocReport {
        AllocReport {
            id: "web-1".into(),
            state,
            pid: Some(7),
            exit_code: None,
            restarts,
            reason: reason.map(str::to_string),
            health: None,
            ports: Default::default(),
            at: 0,
        }
    }

    #[test]
    fn a_report_changes_state_once_and_terminal_states_are_final() {
        let mut a = alloc(AllocState::Pending);
        assert!(merge_report(
            &mut a,
            &report(AllocState::Running, 0, Some("started")),
            10
        ));
        assert_eq!(
            (a.state, a.pid, a.updated_at),
            (AllocState::Running, Some(7), 10)
        );
        assert!(
            !merge_report(&mut a, &report(AllocState::Running, 0, Some("started")), 20),
            "the same report again changes nothing"
        );
        assert_eq!(a.updated_at, 10);
        assert_eq!(a.reasons.len(), 1, "{:?}", a.reasons);
        assert!(merge_report(
            &mut a,
            &report(AllocState::Running, 0, Some("x")),
            30
        ));
        assert!(
            !merge_report(&mut a, &report(AllocState::Running, 0, None), 40),
            "no reason, same state: nothing to write"
        );
        a.state = AllocState::Lost;
        assert!(!merge_report(
            &mut a,
            &report(AllocState::Running, 3, None),
            50
        ));
        assert_eq!(a.state, AllocState::Lost, "a late report cannot revive it");
    }

    #[test]
    fn restarts_never_go_down() {
        let mut a = alloc(AllocState::Running);
        a.restarts = 4;
        merge_report(&mut a, &report(AllocState::Running, 2, None), 1);
        assert_eq!(a.restarts, 4);
    }
}
