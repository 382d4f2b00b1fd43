//! Git sources (issue 21): the leader fetches each `kind: Source`'s ref (only when it
//! moved), reads the commit's manifests without a work tree, decrypts what is
//! encrypted (in memory), plans the set with the scheduler and applies it with its
//! prunes in one transaction, then holds the commit at its health gate.
//!
//! IO only: what to apply, prune, report as drift or refuse, and whether a gate
//! passed, are [`motley_core::source`]'s. Invariants:
//! * Syncs run one at a time (`syncing`), on the leader only.
//! * A sync that changes nothing writes nothing: the record (`applied`, `healthy`,
//!   `failed`) is written only when it changes; status and events live in memory.
//! * Decrypted text lives in `Zeroizing` buffers and sealed Secret values; never on disk.

use std::collections::BTreeMap;

use motley_core::api::{SourceEvent, SourcePlan, SourceView};
use motley_core::manifest::{self, Document};
use motley_core::model::{Kind, SourceSpec, Spec, WorkloadRef};
use motley_core::source::{self as rules, Gate, Options, Owner, Stored};
use serde::{Deserialize, Serialize};

use crate::apply::{ApplyAs, apply_set, check_secret_refs, plan_set, seal_secrets};
mod git;
use git::{fetch, manifest_errors, read_commit, repo_dir};

use crate::state::sources::{Entry, Gating};
use crate::state::{Shared, lock, now_ms};

/// Events kept per source.
const EVENTS: usize = 20;

/// What is stored of a source (written only when it changes).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The commit applied now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied: Option<String>,
    /// The last commit that passed its gate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy: Option<String>,
    /// A commit that failed its gate (held back until the ref moves).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
}

/// Why a sync stopped without applying: its result word and message.
struct Stop(&'static str, String);

/// The sources declared in the cache.
pub(crate) fn declared_sources(s: &Shared) -> Vec<SourceSpec> {
    s.cache()
        .workloads
        .values()
        .filter_map(|w| match &w.spec {
            Spec::Source(src) => Some(src.clone()),
            _ => None,
        })
        .collect()
}

/// The loop: polls each source at its interval (or when asked), and judges the
/// health gates of applied commits. Runs on every server; acts only while leading.
pub async fn run(s: std::sync::Arc<Shared>) {
    loop {
        let next = {
            let entries = lock(&s.sources.entries);
            let soonest = entries
                .values()
                .map(|e| match (&e.gate, e.asked) {
                    (Some(_), _) => now_ms() + 1_000,
                    (None, true) => e.due.min(e.view.last_sync + manifest::MIN_INTERVAL_MS),
                    (None, false) => e.due,
                })
                .min();
            soonest.map_or(5_000, |t| t.saturating_sub(now_ms()).clamp(100, 5_000))
        };
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_millis(next)) => {}
            _ = s.sources.wake.notified() => {}
        }
        if s.ha.leading().is_none() {
            lock(&s.sources.entries).clear();
            continue;
        }
        let specs = declared_sources(&s);
        let mut gone = Vec::new();
        lock(&s.sources.entries).retain(|n, _| {
            let keep = specs.iter().any(|x| &x.name == n);
            if !keep {
                gone.push(n.clone());
            }
            keep
        });
        // A deleted source's repository goes with it (its record went with the object).
        for name in gone {
            if let Ok(dir) = repo_dir(&s, &name) {
                let _ = std::fs::remove_dir_all(&dir);
                let _ = std::fs::remove_file(dir.with_extension("known_hosts"));
            }
        }
        for spec in specs {
            let (due, gating) = {
                let mut entries = lock(&s.sources.entries);
                let e = entries.entry(spec.name.clone()).or_default();
                // A webhook moves the poll forward, never closer than the shortest
                // interval to the last sync.
                let now = now_ms();
                let asked = e.asked && now >= e.view.last_sync + manifest::MIN_INTERVAL_MS;
                // A new or changed source syncs at once.
                let changed = e.synced.as_ref() != Some(&spec);
                let due = asked || changed || now >= e.due;
                if due {
                    e.asked = false;
                }
                (due, e.gate.is_some())
            };
            if gating {
                judge_gate(&s, &spec).await;
            } else if due {
                sync(&s, &spec, false).await;
            }
        }
    }
}

async fn read_record(s: &Shared, name: &str) -> Result<(Record, u64), String> {
    let kv = s
        .store
        .get(&crate::keys::source_record(name))
        .await
        .map_err(|e| format!("reading the source's record: {e}"))?;
    match kv {
        None => Ok((Record::default(), 0)),
        Some(kv) => serde_json::from_slice(&kv.value)
            .map(|r| (r, kv.mod_revision))
            .map_err(|e| format!("the source's record is unreadable: {e}")),
    }
}

async fn write_record(s: &Shared, name: &str, rec: &Record) -> Result<(), String> {
    let v = serde_json::to_vec(rec).map_err(|e| e.to_string())?;
    s.store
        .txn(motley_store::Txn::new().put(crate::keys::source_record(name), v))
        .await
        .map(|_| ())
        .map_err(|e| format!("writing the source's record: {e}"))
}

/// Syncs one source now (the loop, `motley source sync`): fetch, read, plan, apply.
/// Returns its view afterwards.
pub async fn sync(s: &Shared, spec: &SourceSpec, allow_empty: bool) -> SourceView {
    let _one = s.sources.syncing.lock().await;
    let started = std::time::Instant::now();
    let (result, message, commit) = match attempt(s, spec, allow_empty).await {
        Ok((result, message, commit)) => (result, message, commit),
        Err((Stop(result, message), commit)) => (result, message, commit),
    };
    let now = now_ms();
    let label = crate::metrics::SourceLabel {
        source: spec.name.clone(),
    };
    s.metrics
        .source_sync_seconds
        .get_or_create(&label)
        .observe(started.elapsed().as_secs_f64());
    count(s, &spec.name, result);
    let ok = matches!(result, "synced" | "applied" | "waiting");
    if ok {
        s.metrics
            .source_last_success
            .get_or_create(&label)
            .set((now / 1000) as i64);
    }
    match result {
        "failed" | "refused" => tracing::warn!(source = %spec.name, %commit, "{message}"),
        "synced" => tracing::debug!(source = %spec.name, %commit, "{message}"),
        _ => tracing::info!(source = %spec.name, %commit, "{message}"),
    }
    let mut entries = lock(&s.sources.entries);
    let e = entries.entry(spec.name.clone()).or_default();
    e.due = now + spec.interval.as_millis();
    e.synced = Some(spec.clone());
    fill_view(s, spec, &mut e.view);
    event(s, spec, e, &commit, result, message);
    if ok {
        e.view.last_success = e.view.last_sync;
    }
    e.view.clone()
}

/// The view's commits, as the record says.
fn show_record(v: &mut SourceView, rec: &Record) {
    v.applied = rec.applied.clone();
    v.healthy = rec.healthy.clone();
    v.failed = rec.failed.clone();
}

/// Counts a sync's (or a rollback's) result.
fn count(s: &Shared, source: &str, result: &str) {
    s.metrics
        .source_syncs
        .get_or_create(&crate::metrics::SourceResultLabel {
            source: source.to_string(),
            result: result.to_string(),
        })
        .inc();
}

/// The view's fields that come from the spec and the cache.
fn fill_view(s: &Shared, spec: &SourceSpec, v: &mut SourceView) {
    let (how, what) = spec.wanted();
    v.name = spec.name.clone();
    v.url = spec.git.url.clone();
    v.wanted = format!("{how} {what}");
    v.path = spec.git.path.clone();
    v.owned = s
        .cache()
        .workloads
        .values()
        .filter(|w| w.source.as_deref() == Some(spec.name.as_str()))
        .count();
}

type Outcome = Result<(&'static str, String, String), (Stop, String)>;

async fn attempt(s: &Shared, spec: &SourceSpec, allow_empty: bool) -> Outcome {
    let name = &spec.name;
    let known = lock(&s.sources.entries)
        .get(name)
        .and_then(|e| e.view.fetched.clone());
    let fetched = fetch(s, spec, known)
        .await
        .map_err(|stop| (stop, String::new()))?;
    let head = fetched.commit;
    if let Some(e) = lock(&s.sources.entries).get_mut(name) {
        e.view.fetched = Some(head.clone());
    }
    let (mut rec, _) = read_record(s, name)
        .await
        .map_err(|m| (Stop("failed", m), head.clone()))?;
    // A commit that failed its gate stays out until the ref moves (a sync by hand
    // too: push a fix or a revert to go on).
    let target = match (&rec.failed, &rec.applied) {
        (Some(bad), Some(applied)) if *bad == head => applied.clone(),
        _ => head.clone(),
    };
    let held = target != head;
    let same = rec.applied.as_deref() == Some(target.as_str());
    let short = short_commit(&target);
    let mut parts = Vec::new();
    if held {
        parts.push(format!(
            "commit {} failed its health gate; staying at {short} until {} moves",
            short_commit(&head),
            spec.wanted().1
        ));
    }
    // The same commit, checked before, and none of the source's objects (nor the
    // source) changed since: nothing to read again.
    let fp = fingerprint(s, spec);
    let checked = (same || held)
        && lock(&s.sources.entries)
            .get(name)
            .is_some_and(|e| e.checked.as_ref() == Some(&(target.clone(), fp)));
    if checked {
        parts.insert(0, format!("at {short}, nothing to change"));
        return Ok(("synced", parts.join("; "), target));
    }
    let opts = Options {
        prune: spec.prune,
        allow_empty,
        drift: spec.drift,
        same_commit: same,
    };
    let done = apply_commit(s, spec, &target, &opts)
        .await
        .map_err(|stop| (stop, target.clone()))?;
    if !done.drift.is_empty() {
        let names: Vec<String> = done.drift.iter().map(|r| r.to_string()).collect();
        parts.push(match spec.drift {
            motley_core::model::DriftPolicy::Revert => {
                format!("drift put back: {}", names.join(", "))
            }
            motley_core::model::DriftPolicy::Report => {
                format!("drift reported: {}", names.join(", "))
            }
        });
    }
    if let Some(e) = lock(&s.sources.entries).get_mut(name) {
        e.view.drift = done.drift.clone();
        show_record(&mut e.view, &rec);
        e.view.applied.get_or_insert_with(|| target.clone());
        if let Some(p) = done.plan {
            e.view.plan = Some(p);
        }
    }
    if same || held {
        // Applied but never judged (the leader that applied it is gone): the gate
        // starts again, over every workload the commit declares.
        let unjudged = rec.applied.is_some()
            && rec.healthy != rec.applied
            && rec.failed != rec.applied
            && !done.declared.is_empty();
        if unjudged
            && let Some(e) = lock(&s.sources.entries).get_mut(name)
            && e.gate.is_none()
        {
            e.gate = Some(Gating {
                commit: target.clone(),
                changed: done.declared.clone(),
                since: now_ms(),
                timeout: spec.health.timeout.as_millis(),
            });
            parts.push("its health gate was not judged: waiting for it again".into());
        } else if done.changed == 0
            && done.drift.is_empty()
            && let Some(e) = lock(&s.sources.entries).get_mut(name)
        {
            e.checked = Some((target.clone(), fp));
        }
        let what = if done.changed == 0 {
            format!("at {short}, nothing to change")
        } else {
            format!("at {short}, {} object(s) put back", done.changed)
        };
        parts.insert(0, what);
        return Ok(("synced", parts.join("; "), target));
    }
    // A new commit: recorded, and held at its gate when it changed workloads.
    let prev = rec.clone();
    rec.applied = Some(target.clone());
    let gated = !done.workloads.is_empty();
    if !gated {
        rec.healthy = Some(target.clone());
    }
    if rec != prev {
        write_record(s, name, &rec)
            .await
            .map_err(|m| (Stop("failed", m), target.clone()))?;
    }
    let now = now_ms();
    if let Some(e) = lock(&s.sources.entries).get_mut(name) {
        show_record(&mut e.view, &rec);
        e.gate = gated.then(|| Gating {
            commit: target.clone(),
            changed: done.workloads.clone(),
            since: now,
            timeout: spec.health.timeout.as_millis(),
        });
    }
    parts.insert(
        0,
        format!(
            "applied {short}: {} created or changed, {} deleted",
            done.changed, done.deleted
        ),
    );
    if gated {
        parts.push(format!(
            "waiting for {} at the health gate",
            done.workloads
                .iter()
                .map(|r| r.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
        Ok(("waiting", parts.join("; "), target))
    } else {
        Ok(("applied", parts.join("; "), target))
    }
}

/// What applying a commit did.
struct Done {
    /// Objects created or changed.
    changed: usize,
    /// Objects pruned.
    deleted: usize,
    /// Of the changed, the workloads (services, jobs, daemons): the gate's.
    workloads: Vec<WorkloadRef>,
    /// Drift found.
    drift: Vec<WorkloadRef>,
    /// Every workload the commit declares.
    declared: Vec<WorkloadRef>,
    /// The plan, when something was applied.
    plan: Option<SourcePlan>,
}

/// Reads `commit`'s manifests, plans them against the cluster and applies what
/// changed, with the prunes, in one transaction.
async fn apply_commit(
    s: &Shared,
    spec: &SourceSpec,
    commit: &str,
    opts: &Options,
) -> Result<Done, Stop> {
    let mut docs = read_commit(s, spec, commit).await?;
    let (declared, stored, revision) = {
        let cache = s.cache();
        let details = check_secret_refs(&cache, &docs);
        if !details.is_empty() {
            return Err(Stop("failed", manifest_errors(&details, commit)));
        }
        seal_secrets(s, &cache, &mut docs).map_err(|e| Stop("failed", api_message(e, commit)))?;
        let declared: BTreeMap<WorkloadRef, Spec> = docs
            .iter()
            .map(|d| (d.spec.reference(), d.spec.clone()))
            .collect();
        // The sources that exist (by name: unique in the cluster), read once.
        let sources: std::collections::BTreeSet<&str> = cache
            .workloads
            .keys()
            .filter(|r| r.kind == Kind::Source)
            .map(|r| r.name.as_str())
            .collect();
        let stored: BTreeMap<WorkloadRef, Stored> = cache
            .workloads
            .iter()
            .map(|(r, w)| {
                // Objects of a deleted source are left as if made by hand.
                let owner = match &w.source {
                    Some(src) if sources.contains(src.as_str()) => Owner::Source(src.clone()),
                    _ => Owner::Hand,
                };
                (
                    r.clone(),
                    Stored {
                        spec: w.spec.clone(),
                        owner,
                    },
                )
            })
            .collect();
        (declared, stored, cache.revision)
    };
    let plan = rules::plan(&spec.name, &declared, &stored, opts).map_err(|e| {
        let vanished = if declared.is_empty() && !spec.git.path.is_empty() {
            format!(" ({} has no manifests in it)", spec.git.path)
        } else {
            String::new()
        };
        Stop("refused", format!("commit {commit}{vanished}: {e}"))
    })?;
    let drift = plan.drift.clone();
    let all: Vec<WorkloadRef> = declared
        .keys()
        .filter(|r| r.kind.is_workload())
        .cloned()
        .collect();
    if plan.is_empty() {
        return Ok(Done {
            changed: 0,
            deleted: 0,
            workloads: Vec::new(),
            drift,
            declared: all,
            plan: None,
        });
    }
    // The revisions the plan is made at: the apply requires them unchanged.
    let expect: motley_rt::HashMap<String, u64> = {
        let cache = s.cache();
        plan.apply
            .iter()
            .chain(plan.prune.iter())
            .map(|r| {
                let k = crate::keys::workload(r);
                let rev = cache.rev(&k);
                (k, rev)
            })
            .collect()
    };
    let to_apply: Vec<Document> = docs
        .into_iter()
        .filter(|d| plan.apply.contains(&d.spec.reference()))
        .collect();
    let scheduled = plan_set(s, &to_apply, &plan.prune).await;
    let how = ApplyAs {
        dry_run: false,
        source: Some(&spec.name),
        delete: &plan.prune,
        expect: Some(&expect),
    };
    apply_set(s, &to_apply, &how)
        .await
        .map_err(|e| Stop("failed", api_message(e, commit)))?;
    let workloads = plan
        .apply
        .iter()
        .filter(|r| r.kind.is_workload() && declared_changed(r, &stored, &declared))
        .cloned()
        .collect();
    Ok(Done {
        changed: plan.apply.len(),
        deleted: plan.prune.len(),
        workloads,
        drift,
        declared: all,
        plan: Some(SourcePlan {
            commit: commit.to_string(),
            at: now_ms(),
            revision,
            plan: scheduled,
        }),
    })
}

/// Whether a declared object's spec differs from the stored one (an adopted object
/// with the same spec changes nothing that runs).
fn declared_changed(
    r: &WorkloadRef,
    stored: &BTreeMap<WorkloadRef, Stored>,
    declared: &BTreeMap<WorkloadRef, Spec>,
) -> bool {
    stored.get(r).map(|x| &x.spec) != declared.get(r)
}

/// An API error of a commit's apply, in words, with every field error.
fn api_message(e: crate::error::ApiError, commit: &str) -> String {
    if e.1.details.is_empty() {
        format!("commit {commit}: {}", e.1.error)
    } else {
        manifest_errors(&e.1.details, commit)
    }
}

/// Judges the gate of a source's applied commit; on failure goes back to the last
/// healthy commit.
async fn judge_gate(s: &Shared, spec: &SourceSpec) {
    let Some(g) = lock(&s.sources.entries)
        .get(&spec.name)
        .and_then(|e| e.gate.clone())
    else {
        return;
    };
    let verdict = {
        let c = s.cache();
        rules::gate(
            &g.changed,
            &c.workloads,
            c.allocs.values(),
            g.since,
            g.timeout,
            now_ms(),
        )
    };
    let why = match verdict {
        Gate::Wait(_) => return,
        Gate::Pass => {
            let _one = s.sources.syncing.lock().await;
            let r = match read_record(s, &spec.name).await {
                Ok((mut rec, _)) if rec.applied.as_deref() == Some(g.commit.as_str()) => {
                    rec.healthy = Some(g.commit.clone());
                    write_record(s, &spec.name, &rec).await.map(|_| rec)
                }
                Ok((rec, _)) => Ok(rec),
                Err(m) => Err(m),
            };
            let short = short_commit(&g.commit);
            let mut entries = lock(&s.sources.entries);
            let Some(e) = entries.get_mut(&spec.name) else {
                return;
            };
            match r {
                Ok(rec) => {
                    e.gate = None;
                    e.view.healthy = rec.healthy;
                    event(
                        s,
                        spec,
                        e,
                        &g.commit,
                        "healthy",
                        format!("{short} passed its health gate"),
                    );
                }
                Err(m) => event(s, spec, e, &g.commit, "failed", m),
            }
            return;
        }
        Gate::Fail(why) => why,
    };
    rollback(s, spec, &g, &why).await;
}

/// Records what a sync (or a gate) ended with. One that ends as the last did (nothing
/// new, the same failure) is not a new event: the last one's time moves.
/// Records a sync's outcome in the source's view and, unless it repeats the last one,
/// in the cluster's events.
fn event(
    s: &Shared,
    spec: &SourceSpec,
    e: &mut Entry,
    commit: &str,
    result: &str,
    message: String,
) {
    let now = now_ms();
    let v = &mut e.view;
    v.result = result.to_string();
    v.last_sync = now;
    match v
        .events
        .last_mut()
        .filter(|x| x.commit == commit && x.result == result && x.message == message)
    {
        Some(x) => x.at = now,
        None => {
            // `source/NAME` in default, `dev/source/NAME` in dev: a token limited to dev
            // sees its sources' events.
            let object = WorkloadRef::in_namespace(
                spec.namespace
                    .as_deref()
                    .unwrap_or(motley_core::model::DEFAULT_NAMESPACE),
                Kind::Source,
                spec.name.clone(),
            );
            s.events.push(motley_core::events::New::about(
                motley_core::events::EventKind::SourceSynced,
                object.to_string(),
                format!("{result}: {message}"),
            ));
            v.events.push(SourceEvent {
                at: now,
                commit: commit.to_string(),
                result: result.to_string(),
                message: message.clone(),
            });
            let over = v.events.len().saturating_sub(EVENTS);
            v.events.drain(..over);
        }
    }
    v.message = message;
}

/// Goes back to the last healthy commit after `g.commit` failed its gate.
async fn rollback(s: &Shared, spec: &SourceSpec, g: &Gating, why: &str) {
    let _one = s.sources.syncing.lock().await;
    let short = short_commit(&g.commit);
    // The result, its message, and the record as stored afterwards (none: unreadable).
    let (result, message, stored) = match read_record(s, &spec.name).await {
        Err(m) => ("failed", m, None),
        Ok((before, _)) => {
            let mut rec = before.clone();
            rec.failed = Some(g.commit.clone());
            let (outcome, write) = match before.healthy.clone().filter(|h| *h != g.commit) {
                None => (
                    Ok((
                        "failed",
                        format!(
                            "{short} failed its health gate ({why}); there is no earlier healthy commit to go back to"
                        ),
                    )),
                    true,
                ),
                Some(healthy) => {
                    let opts = Options {
                        prune: spec.prune,
                        allow_empty: true,
                        drift: motley_core::model::DriftPolicy::Revert,
                        same_commit: false,
                    };
                    let hs = short_commit(&healthy);
                    match apply_commit(s, spec, &healthy, &opts).await {
                        Ok(_) => {
                            rec.applied = Some(healthy.clone());
                            (
                                Ok((
                                    "rolled back",
                                    format!(
                                        "{short} failed its health gate ({why}); back at {hs}, the last healthy commit"
                                    ),
                                )),
                                true,
                            )
                        }
                        Err(Stop(_, m)) => (
                            Err(format!(
                                "{short} failed its health gate ({why}); going back to {hs} failed: {m}"
                            )),
                            false,
                        ),
                    }
                }
            };
            let written = if write {
                write_record(s, &spec.name, &rec).await
            } else {
                Ok(())
            };
            match (outcome, written) {
                (Ok((result, m)), Ok(())) => (result, m, Some(rec)),
                (Ok(_), Err(m)) | (Err(m), _) => ("failed", m, Some(before)),
            }
        }
    };
    tracing::warn!(source = %spec.name, commit = %g.commit, "{message}");
    count(s, &spec.name, result);
    if let Some(rec) = stored {
        let mut entries = lock(&s.sources.entries);
        if let Some(e) = entries.get_mut(&spec.name) {
            e.gate = None;
            show_record(&mut e.view, &rec);
            event(s, spec, e, &g.commit, result, message);
        }
    }
}

/// What a same-commit sync depends on besides the commit: the source's object and
/// every object it applied, at their store revisions.
fn fingerprint(s: &Shared, spec: &SourceSpec) -> u64 {
    use std::hash::{Hash, Hasher};
    let c = s.cache();
    let mut h = std::hash::DefaultHasher::new();
    c.rev(&crate::keys::workload(
        &Spec::Source(spec.clone()).reference(),
    ))
    .hash(&mut h);
    for (r, w) in &c.workloads {
        if w.source.as_deref() == Some(spec.name.as_str()) {
            r.hash(&mut h);
            c.rev(&crate::keys::workload(r)).hash(&mut h);
        }
    }
    h.finish()
}

use motley_core::source::short_commit;

/// The named source's spec, from the cache, in whichever namespace (a source's name is
/// unique in the cluster: objects record their source by name). References order by
/// kind, then name, then namespace: one lookup from the smallest namespace finds it.
pub fn spec_of(s: &Shared, name: &str) -> Option<SourceSpec> {
    let cache = s.cache();
    let from = WorkloadRef::in_namespace("", Kind::Source, name);
    match cache.workloads.range(from..).next() {
        Some((r, w)) if r.kind == Kind::Source && r.name == name => match &w.spec {
            Spec::Source(src) => Some(src.clone()),
            _ => None,
        },
        _ => None,
    }
}

/// The named source's view (filled from the spec before its first sync).
pub fn view_of(s: &Shared, spec: &SourceSpec) -> SourceView {
    let mut entries = lock(&s.sources.entries);
    let e = entries.entry(spec.name.clone()).or_default();
    fill_view(s, spec, &mut e.view);
    if e.view.result.is_empty() {
        e.view.result = "pending".into();
        e.view.message = "not synced yet".into();
    }
    e.view.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(yaml: &str) -> Document {
        match manifest::parse_set(&[manifest::Source {
            name: "t.yaml",
            text: yaml,
        }]) {
            Ok(mut d) => d.remove(0),
            Err(e) => panic!("{e:?}"),
        }
    }

    /// A source's apply carries the revisions its plan was made at: an object changed
    /// in between (by hand) fails the apply, which changes nothing.
    #[tokio::test]
    async fn an_apply_planned_before_a_change_changes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = crate::state::tests::shared(dir.path());
        s.start_cache().await.expect("cache");
        let web = |n: u32| {
            doc(&format!(
                "kind: Service\nname: web\nreplicas: {n}\ntask:\n  command: [x]\n"
            ))
        };
        let key = crate::keys::workload(&web(1).spec.reference());
        let by_hand = ApplyAs::default();
        apply_set(&s, &[web(1)], &by_hand).await.expect("apply 1");
        let planned = s
            .store
            .get(&key)
            .await
            .expect("get")
            .expect("stored")
            .mod_revision;
        apply_set(&s, &[web(2)], &by_hand).await.expect("apply 2");
        let expect: motley_rt::HashMap<String, u64> =
            [(key.clone(), planned)].into_iter().collect();
        let how = ApplyAs {
            source: Some("home"),
            expect: Some(&expect),
            ..ApplyAs::default()
        };
        let err = match apply_set(&s, &[web(3)], &how).await {
            Ok(r) => panic!("applied: {r:?}"),
            Err(e) => e,
        };
        assert_eq!(err.0, axum::http::StatusCode::CONFLICT);
        assert!(
            err.1.error.contains("changed since the plan"),
            "{}",
            err.1.error
        );
        let kv = s.store.get(&key).await.expect("get").expect("stored");
        let w: motley_core::model::Workload = serde_json::from_slice(&kv.value).expect("decode");
        assert_eq!((w.generation, w.source), (2, None), "nothing applied");
        // At the current revision it applies, and the object records its source.
        let expect: motley_rt::HashMap<String, u64> =
            [(key.clone(), kv.mod_revision)].into_iter().collect();
        let how = ApplyAs {
            expect: Some(&expect),
            ..how
        };
        apply_set(&s, &[web(3)], &how).await.expect("apply 3");
        let kv = s.store.get(&key).await.expect("get").expect("stored");
        let w: motley_core::model::Workload = serde_json::from_slice(&kv.value).expect("decode");
        assert_eq!((w.generation, w.source.as_deref()), (3, Some("home")));
    }
}
