//! Events: a bounded stream of what happened and why (issue 23). Pure: what a change
//! of a stored allocation, node or workload says happened ([`alloc_change`],
//! [`node_change`], [`workload_change`]), and the bounded, queryable [`Ring`] the
//! server keeps them in (memory only: an idle cluster writes nothing for them).
//!
//! Every server derives the store's events from its own watch, in revision order, so a
//! new leader has the same history of what was stored; what only the leader sees (node
//! health verdicts, leadership, syncs) is pushed by the leader that saw it.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::model::{AllocState, Allocation, Desired, Node, Workload, WorkloadRef};
use crate::reconcile::Blocked;

/// What kind of thing happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    /// An allocation was placed on a node.
    Scheduled,
    /// Its process started.
    Started,
    /// Its process exited (code, signal, out of memory).
    Exited,
    /// It was started again in place.
    Restarted,
    /// It was asked to stop to make room for work of higher priority.
    Preempted,
    /// It was asked to stop (scaled down, updated, drained, deleted).
    Stopping,
    /// It stopped as asked.
    Stopped,
    /// Its node was declared down with it on it.
    Lost,
    /// Work waits: no node can take it now (with the scheduler's reasons).
    Blocked,
    /// A node heartbeats.
    NodeReady,
    /// A node's heartbeats are late.
    NodeSuspect,
    /// A node was declared down (with the detector's evidence).
    NodeDown,
    /// A node's condition began (under-voltage, throttling, heat, disk, memory).
    ConditionRaised,
    /// A node's condition ended.
    ConditionCleared,
    /// A node takes no new work.
    Cordoned,
    /// A node takes work again.
    Uncordoned,
    /// A node is being drained.
    Drained,
    /// Another server leads.
    LeaderChanged,
    /// A git source synced (or failed to).
    SourceSynced,
    /// An object was created or changed by an apply.
    Applied,
    /// An object was deleted.
    Deleted,
    /// An experiment started or ended (issue 24).
    Experiment,
}

impl EventKind {
    /// The kebab-case name (`node-down`).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Scheduled => "scheduled",
            EventKind::Started => "started",
            EventKind::Exited => "exited",
            EventKind::Restarted => "restarted",
            EventKind::Preempted => "preempted",
            EventKind::Stopping => "stopping",
            EventKind::Stopped => "stopped",
            EventKind::Lost => "lost",
            EventKind::Blocked => "blocked",
            EventKind::NodeReady => "node-ready",
            EventKind::NodeSuspect => "node-suspect",
            EventKind::NodeDown => "node-down",
            EventKind::ConditionRaised => "condition-raised",
            EventKind::ConditionCleared => "condition-cleared",
            EventKind::Cordoned => "cordoned",
            EventKind::Uncordoned => "uncordoned",
            EventKind::Drained => "drained",
            EventKind::LeaderChanged => "leader-changed",
            EventKind::SourceSynced => "source-synced",
            EventKind::Applied => "applied",
            EventKind::Deleted => "deleted",
            EventKind::Experiment => "experiment",
        }
    }
}

/// One event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Its place in this server's stream (increasing; a watcher resumes after it).
    pub seq: u64,
    /// When (ms since the epoch, the server's clock).
    pub at: u64,
    /// What happened.
    pub kind: EventKind,
    /// What it is about: `service/web`, `dev/job/train`, `node/pi-2`, `source/home`,
    /// `server/s1`.
    pub object: String,
    /// The allocation, for an event of one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alloc: Option<String>,
    /// The node, for an event on one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Why, in words.
    pub message: String,
}

/// An event before it has a place in a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct New {
    /// What happened.
    pub kind: EventKind,
    /// What it is about (see [`Event::object`]).
    pub object: String,
    /// The allocation.
    pub alloc: Option<String>,
    /// The node.
    pub node: Option<String>,
    /// Why.
    pub message: String,
}

impl New {
    /// An event about `object`.
    pub fn about(kind: EventKind, object: impl Into<String>, message: impl Into<String>) -> New {
        New {
            kind,
            object: object.into(),
            alloc: None,
            node: None,
            message: message.into(),
        }
    }

    /// An event about node `node`.
    pub fn node(kind: EventKind, node: &str, message: impl Into<String>) -> New {
        New {
            node: Some(node.to_string()),
            ..New::about(kind, format!("node/{node}"), message)
        }
    }

    fn of(kind: EventKind, a: &Allocation, message: impl Into<String>) -> New {
        New {
            kind,
            object: a.workload.to_string(),
            alloc: Some(a.id.clone()),
            node: Some(a.node.clone()),
            message: message.into(),
        }
    }
}

/// Which events a reader wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// `service/web` (and its allocations' events), `alloc/ID`, `node/NAME` (and the
    /// events of allocations on it); none: every object.
    pub object: Option<String>,
    /// Only events at or after this time (ms).
    pub since: u64,
    /// Only events after this sequence number (a watcher resuming).
    pub after: u64,
    /// Only objects of this namespace (`service/web` is in `default`); none: every one.
    pub namespace: Option<String>,
}

impl Filter {
    /// Whether `e` passes.
    pub fn matches(&self, e: &Event) -> bool {
        if e.at < self.since || e.seq <= self.after {
            return false;
        }
        if let Some(ns) = &self.namespace
            && namespace_of(&e.object) != Some(ns.as_str())
        {
            return false;
        }
        match self.object.as_deref() {
            None => true,
            Some(o) => {
                e.object == o
                    || o.strip_prefix("alloc/")
                        .is_some_and(|id| e.alloc.as_deref() == Some(id))
                    || o.strip_prefix("node/")
                        .is_some_and(|n| e.node.as_deref() == Some(n))
            }
        }
    }
}

/// The namespace of an event's object: `default` for `kind/name`, the first segment
/// of `ns/kind/name`; none for what is cluster-wide (nodes, servers, namespaces).
pub fn namespace_of(object: &str) -> Option<&str> {
    let parts: Vec<&str> = object.split('/').collect();
    match parts.as_slice() {
        ["node" | "server" | "namespace", _] => None,
        [_, _] => Some(crate::model::DEFAULT_NAMESPACE),
        [ns, _, _] => Some(ns),
        _ => None,
    }
}

/// The last events, at most `cap` of them, oldest first.
#[derive(Debug, Clone)]
pub struct Ring {
    cap: usize,
    next: u64,
    buf: VecDeque<Event>,
}

impl Ring {
    /// An empty ring keeping at most `cap` events.
    pub fn new(cap: usize) -> Ring {
        Ring {
            cap: cap.max(1),
            next: 1,
            buf: VecDeque::new(),
        }
    }

    /// Adds an event at `at`, dropping the oldest beyond the cap; returns it.
    pub fn push(&mut self, at: u64, e: New) -> &Event {
        if self.buf.len() == self.cap {
            self.buf.pop_front();
        }
        self.buf.push_back(Event {
            seq: self.next,
            at,
            kind: e.kind,
            object: e.object,
            alloc: e.alloc,
            node: e.node,
            message: e.message,
        });
        self.next += 1;
        &self.buf[self.buf.len() - 1]
    }

    /// The events `f` lets through, oldest first, at most the last `limit`.
    pub fn query(&self, f: &Filter, limit: usize) -> Vec<Event> {
        let mut out: Vec<Event> = self
            .buf
            .iter()
            .rev()
            .filter(|e| f.matches(e))
            .take(limit)
            .cloned()
            .collect();
        out.reverse();
        out
    }

    /// The oldest `limit` events after sequence number `after`, oldest first: what a
    /// forwarder sends next, so that a burst larger than one post skips nothing.
    pub fn oldest_after(&self, after: u64, limit: usize) -> Vec<Event> {
        self.buf
            .iter()
            .filter(|e| e.seq > after)
            .take(limit)
            .cloned()
            .collect()
    }

    /// The sequence number of the newest event (0: none yet).
    pub fn last_seq(&self) -> u64 {
        self.next - 1
    }

    /// How many are kept.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

/// The last reason an allocation carries.
fn last_reason(a: &Allocation) -> &str {
    a.reasons.last().map_or("", String::as_str)
}

/// How a process ended, in words: `exited with code 3`, `killed by signal 9`, or the
/// out-of-memory kill the agent names.
fn ending(a: &Allocation) -> String {
    let why = last_reason(a);
    // The kernel's kill is said with the exit; a reason may follow it (the job failed).
    if let Some(oom) = a
        .reasons
        .iter()
        .rev()
        .take(2)
        .find(|r| r.contains("out of memory"))
    {
        return oom.clone();
    }
    match a.exit_code {
        Some(c) if c < 0 => format!("killed by signal {}", -c),
        Some(c) => format!("exited with code {c}"),
        None if why.is_empty() => "ended".to_string(),
        None => why.to_string(),
    }
}

/// What a change of a stored allocation says happened (`old` none: it was created;
/// `new` none: it was deleted, which says nothing new).
pub fn alloc_change(old: Option<&Allocation>, new: Option<&Allocation>) -> Vec<New> {
    let Some(a) = new else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let Some(o) = old else {
        let mut msg = format!("placed on {}", a.node);
        if !a.gpus.is_empty() {
            msg.push_str(&format!(" with {}", a.gpus.join(", ")));
        }
        out.push(New::of(EventKind::Scheduled, a, msg));
        return out;
    };
    if a.restarts > o.restarts {
        out.push(New::of(
            EventKind::Restarted,
            a,
            // The new record holds the last run's exit (the old one is the run itself).
            format!(
                "restart {} (the last run {})",
                a.restarts,
                if a.exit_code.is_some() {
                    ending(a)
                } else {
                    ending(o)
                }
            ),
        ));
    }
    if a.state != o.state {
        match a.state {
            AllocState::Running => out.push(New::of(
                EventKind::Started,
                a,
                a.pid
                    .map_or_else(|| "running".to_string(), |p| format!("pid {p}")),
            )),
            AllocState::Backoff | AllocState::Complete | AllocState::Failed => {
                let mut msg = ending(a);
                // The agent's reason often says the ending already ("killed by signal
                // 9; restarting in 1000ms"): said once.
                let why = last_reason(a);
                if a.state == AllocState::Backoff && why.starts_with(msg.as_str()) {
                    msg = why.to_string();
                } else if a.state == AllocState::Backoff {
                    msg.push_str(&format!("; {why}"));
                }
                out.push(New::of(EventKind::Exited, a, msg));
            }
            AllocState::Lost => out.push(New::of(EventKind::Lost, a, last_reason(a))),
            AllocState::Stopped => out.push(New::of(EventKind::Stopped, a, last_reason(a))),
            AllocState::Pending => {}
        }
    }
    if a.desired == Desired::Stop && o.desired != Desired::Stop {
        let why = last_reason(a);
        let kind = if why.contains("preempted by") {
            EventKind::Preempted
        } else {
            EventKind::Stopping
        };
        out.push(New::of(kind, a, why));
    }
    out
}

/// What a change of a stored node says happened: conditions raised and cleared
/// (those a node registers with are raised), cordoned, uncordoned, drained.
pub fn node_change(old: Option<&Node>, new: Option<&Node>) -> Vec<New> {
    let Some(n) = new else {
        return Vec::new();
    };
    let Some(o) = old else {
        return n
            .facts
            .conditions
            .iter()
            .map(|c| {
                New::node(
                    EventKind::ConditionRaised,
                    &n.name,
                    format!("{}: {}", c.kind.as_str(), c.reason),
                )
            })
            .collect();
    };
    let mut out = Vec::new();
    for c in &n.facts.conditions {
        if !o.facts.conditions.iter().any(|x| x.kind == c.kind) {
            out.push(New::node(
                EventKind::ConditionRaised,
                &n.name,
                format!("{}: {}", c.kind.as_str(), c.reason),
            ));
        }
    }
    for c in &o.facts.conditions {
        if !n.facts.conditions.iter().any(|x| x.kind == c.kind) {
            out.push(New::node(
                EventKind::ConditionCleared,
                &n.name,
                c.kind.as_str().to_string(),
            ));
        }
    }
    if n.draining && !o.draining {
        out.push(New::node(
            EventKind::Drained,
            &n.name,
            "draining: its work moves elsewhere",
        ));
    } else if n.cordoned && !o.cordoned {
        out.push(New::node(EventKind::Cordoned, &n.name, "takes no new work"));
    } else if !n.cordoned && o.cordoned {
        out.push(New::node(
            EventKind::Uncordoned,
            &n.name,
            "takes work again",
        ));
    }
    out
}

/// Work that began to wait, or waits for another reason now: one event each (a
/// workload that keeps waiting for the same reason says nothing more).
pub fn blocked_change(
    old: &BTreeMap<WorkloadRef, Blocked>,
    new: &BTreeMap<WorkloadRef, Blocked>,
) -> Vec<New> {
    new.iter()
        .filter(|(r, b)| old.get(*r).is_none_or(|o| o.why.summary != b.why.summary))
        .map(|(r, b)| {
            New::about(
                EventKind::Blocked,
                r.to_string(),
                format!("{} instance(s) wait: {}", b.count, b.why.summary),
            )
        })
        .collect()
}

/// What a change of a stored workload says: applied (created or a new generation) or
/// deleted.
pub fn workload_change(old: Option<&Workload>, new: Option<&Workload>) -> Vec<New> {
    match (old, new) {
        (None, Some(w)) => vec![New::about(
            EventKind::Applied,
            w.spec.reference().to_string(),
            "created",
        )],
        (Some(o), Some(w)) if w.generation != o.generation => vec![New::about(
            EventKind::Applied,
            w.spec.reference().to_string(),
            format!("generation {}", w.generation),
        )],
        (Some(o), None) => vec![New::about(
            EventKind::Deleted,
            o.spec.reference().to_string(),
            "deleted",
        )],
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alloc(yaml_state: &str) -> Allocation {
        let mut a: Allocation = match serde_json::from_str(
            r#"{"id":"web-1","workload":"dev/service/web","workload_uid":"u","generation":1,"index":0,"node":"pi-2","task":{"command":["x"]},"restart":{"mode":"always","max_restarts":null,"backoff":{"initial":"1s","max":"60s"}},"on_node_loss":"replace","desired":"run","state":"pending","restarts":0,"reasons":[],"created_at":1,"updated_at":1}"#,
        ) {
            Ok(a) => a,
            Err(e) => panic!("{e}"),
        };
        a.state = match yaml_state {
            "running" => AllocState::Running,
            "backoff" => AllocState::Backoff,
            "failed" => AllocState::Failed,
            _ => AllocState::Pending,
        };
        a
    }

    fn kinds(v: &[New]) -> Vec<&'static str> {
        v.iter().map(|e| e.kind.as_str()).collect()
    }

    #[test]
    fn a_forwarder_reads_the_oldest_after_what_it_sent() {
        let mut ring = Ring::new(1000);
        for i in 0..700 {
            ring.push(i, New::about(EventKind::Applied, "job/x", format!("{i}")));
        }
        let seqs = |v: Vec<Event>| v.iter().map(|e| e.seq).collect::<Vec<_>>();
        assert_eq!(
            seqs(ring.oldest_after(0, 500)),
            (1..=500).collect::<Vec<_>>()
        );
        assert_eq!(
            seqs(ring.oldest_after(500, 500)),
            (501..=700).collect::<Vec<_>>()
        );
        assert!(ring.oldest_after(700, 500).is_empty());
    }

    #[test]
    fn an_allocations_life_reads_as_events() {
        let pending = alloc("pending");
        let created = alloc_change(None, Some(&pending));
        assert_eq!(kinds(&created), ["scheduled"]);
        assert_eq!(created[0].object, "dev/service/web");
        assert_eq!(created[0].message, "placed on pi-2");
        let mut running = alloc("running");
        running.pid = Some(42);
        let started = alloc_change(Some(&pending), Some(&running));
        assert_eq!(kinds(&started), ["started"]);
        assert_eq!(started[0].message, "pid 42");
        let mut crashed = alloc("backoff");
        crashed.exit_code = Some(3);
        crashed.reasons = vec!["exited with code 3; restarting in 1000ms".into()];
        let exited = alloc_change(Some(&running), Some(&crashed));
        assert_eq!(kinds(&exited), ["exited"]);
        assert_eq!(
            exited[0].message, "exited with code 3; restarting in 1000ms",
            "the ending said once"
        );
        // The agent counts the restart with the exit: the restart says how the run
        // that just ended ended.
        let mut counted = crashed.clone();
        counted.restarts = 1;
        let both = alloc_change(Some(&running), Some(&counted));
        assert_eq!(kinds(&both), ["restarted", "exited"]);
        assert_eq!(
            both[0].message,
            "restart 1 (the last run exited with code 3)"
        );
        let mut again = alloc("running");
        again.restarts = 1;
        assert_eq!(
            kinds(&alloc_change(Some(&crashed), Some(&again))),
            ["restarted", "started"]
        );
        let mut oom = alloc("failed");
        oom.exit_code = Some(-9);
        oom.reasons = vec!["killed by the kernel: out of memory (over its memory limit)".into()];
        let e = alloc_change(Some(&again), Some(&oom));
        assert!(e[0].message.contains("out of memory"), "{e:?}");
        let mut killed = oom.clone();
        killed.reasons.clear();
        assert_eq!(
            alloc_change(Some(&again), Some(&killed))[0].message,
            "killed by signal 9"
        );
        let mut preempted = again.clone();
        preempted.desired = Desired::Stop;
        preempted.reasons = vec!["preempted by service/db (priority 100)".into()];
        assert_eq!(
            kinds(&alloc_change(Some(&again), Some(&preempted))),
            ["preempted"]
        );
        let mut scaled = again.clone();
        scaled.desired = Desired::Stop;
        scaled.reasons = vec!["scaled down".into()];
        assert_eq!(
            kinds(&alloc_change(Some(&again), Some(&scaled))),
            ["stopping"]
        );
        // Nothing new, nothing said; a deletion says nothing either.
        assert!(alloc_change(Some(&again), Some(&again)).is_empty());
        assert!(alloc_change(Some(&again), None).is_empty());
    }

    #[test]
    fn the_ring_keeps_the_last_and_filters() {
        let mut r = Ring::new(3);
        for i in 0..5u64 {
            let mut e = New::about(EventKind::Applied, format!("service/s{i}"), "created");
            if i == 4 {
                e = New {
                    alloc: Some("a1".into()),
                    node: Some("pi".into()),
                    ..New::about(EventKind::Started, "dev/service/web", "pid 1")
                };
            }
            r.push(100 + i, e);
        }
        assert_eq!(r.len(), 3);
        assert_eq!(r.last_seq(), 5);
        let all = r.query(&Filter::default(), 10);
        assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), [3, 4, 5]);
        assert_eq!(r.query(&Filter::default(), 2).len(), 2);
        let f = |object: &str| Filter {
            object: Some(object.into()),
            ..Filter::default()
        };
        assert_eq!(r.query(&f("service/s3"), 10).len(), 1);
        assert_eq!(r.query(&f("alloc/a1"), 10).len(), 1);
        assert_eq!(r.query(&f("node/pi"), 10).len(), 1);
        assert_eq!(r.query(&f("service/web"), 10).len(), 0, "web is in dev");
        let later = Filter {
            since: 104,
            ..Filter::default()
        };
        assert_eq!(r.query(&later, 10).len(), 1);
        let after = Filter {
            after: 4,
            ..Filter::default()
        };
        assert_eq!(r.query(&after, 10)[0].seq, 5);
        let dev = Filter {
            namespace: Some("dev".into()),
            ..Filter::default()
        };
        assert_eq!(r.query(&dev, 10).len(), 1);
        assert_eq!(namespace_of("node/pi"), None);
        assert_eq!(namespace_of("job/j"), Some("default"));
    }
}
