//! The apply path shared by `motley apply` and git sources: a parsed set checked
//! against the cluster and written in one transaction (all or nothing), and the plan
//! of a set (one reconcile as if it were applied).

use motley_rt::HashMap;

use axum::http::StatusCode;
use motley_core::api::{ObjectResult, ObjectResults};
use motley_core::manifest::{self, ClusterLimits};
use motley_core::model::{Kind, Spec, Workload, WorkloadRef};
use motley_core::reconcile;
use motley_store::Txn;

use crate::error::{ApiError, ApiResult, invalid};
use crate::keys;
use crate::state::{Shared, now_ms};

/// Every task's secret (and config) references must name a secret (a config) of the
/// set or the cluster, and a key it has.
pub(crate) fn check_secret_refs(
    cache: &crate::state::Cache,
    docs: &[manifest::Document],
) -> Vec<manifest::ManifestError> {
    let mut errors = Vec::new();
    // A Secret of the same namespace as the document naming it.
    let keys_of = |d: &manifest::Document, name: &str| -> Option<Vec<String>> {
        let r = d.spec.reference().sibling(Kind::Secret, name);
        let in_set = docs.iter().find_map(|x| match &x.spec {
            Spec::Secret(s) if x.spec.reference() == r => Some(s.data.keys().cloned().collect()),
            _ => None,
        });
        in_set.or_else(|| match cache.workloads.get(&r).map(|w| &w.spec) {
            Some(Spec::Secret(s)) => Some(s.data.keys().cloned().collect()),
            _ => None,
        })
    };
    for d in docs {
        if let Spec::Service(svc) = &d.spec {
            for (i, e) in svc.expose.iter().enumerate() {
                let Some(name) = e.tls.as_ref().and_then(|t| t.secret.as_ref()) else {
                    continue;
                };
                let field = format!("expose.{i}.tls.secret");
                match keys_of(d, name) {
                    None => errors.push(d.error_at(
                        &field,
                        format!("secret {name} is neither in this set nor in the cluster"),
                    )),
                    Some(keys)
                        if !keys.iter().any(|k| k == "tls.crt")
                            || !keys.iter().any(|k| k == "tls.key") =>
                    {
                        errors.push(d.error_at(
                            &field,
                            format!(
                                "secret {name} needs keys tls.crt and tls.key (it has: {})",
                                keys.join(", ")
                            ),
                        ))
                    }
                    Some(_) => {}
                }
            }
        }
        if let Some(name) = &d.spec.task().image_secret {
            match keys_of(d, name) {
                None => errors.push(d.error_at(
                    "task.image_secret",
                    format!("secret {name} is neither in this set nor in the cluster"),
                )),
                Some(keys)
                    if !keys.iter().any(|k| k == "username")
                        || !keys.iter().any(|k| k == "password") =>
                {
                    errors.push(d.error_at(
                        "task.image_secret",
                        format!(
                            "secret {name} needs keys username and password (it has: {})",
                            keys.join(", ")
                        ),
                    ))
                }
                Some(_) => {}
            }
        }
        for (i, r) in d.spec.task().secrets.iter().enumerate() {
            match keys_of(d, &r.secret) {
                None => errors.push(d.error_at(
                    &format!("task.secrets[{i}].secret"),
                    format!(
                        "secret {} is neither in this set nor in the cluster",
                        r.secret
                    ),
                )),
                Some(keys) if !keys.contains(&r.key) => errors.push(d.error_at(
                    &format!("task.secrets[{i}].key"),
                    format!(
                        "secret {} has no key {} (it has: {})",
                        r.secret,
                        r.key,
                        keys.join(", ")
                    ),
                )),
                Some(_) => {}
            }
        }
    }
    errors.extend(crate::configs::check_refs(cache, docs));
    errors
}

/// Seals every Secret value of the set. A value whose plaintext equals the stored one
/// keeps its stored sealed form, so an unchanged secret compares equal and is not
/// rewritten. Stamps config references with their versions too (what a source's
/// plan compares).
pub(crate) fn seal_secrets(
    s: &Shared,
    cache: &crate::state::Cache,
    docs: &mut [manifest::Document],
) -> ApiResult<()> {
    crate::configs::stamp_docs(cache, docs);
    let ring = crate::state::read(&s.trust.keyring);
    for d in docs.iter_mut() {
        let r = d.spec.reference();
        let sealed_to = r.scoped_name();
        let Spec::Secret(sec) = &mut d.spec else {
            continue;
        };
        let old = match cache.workloads.get(&r).map(|w| &w.spec) {
            Some(Spec::Secret(o)) => Some(o),
            _ => None,
        };
        for (k, v) in sec.data.iter_mut() {
            let Some(plain) = v.value.take() else {
                continue;
            };
            let reuse = old
                .and_then(|o| o.data.get(k))
                .and_then(|o| o.sealed.as_ref())
                .filter(|sealed| {
                    ring.is_current(sealed)
                        && ring
                            .open(&sealed_to, k, sealed)
                            .is_ok_and(|p| p == plain.as_bytes())
                })
                .cloned();
            let sealed = match reuse {
                Some(x) => x,
                None => ring.seal(&sealed_to, k, plain.as_bytes()).map_err(|e| {
                    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("sealing: {e}"))
                })?,
            };
            *v = motley_core::model::SecretValue {
                sealed: Some(sealed),
                ..Default::default()
            };
        }
    }
    Ok(())
}

/// How [`apply_set`] applies a set.
#[derive(Default)]
pub(crate) struct ApplyAs<'a> {
    /// Check and report only.
    pub dry_run: bool,
    /// The source applying it: each object records it (and one made by hand is taken
    /// over). `None`: by hand, and each object keeps the source it had.
    pub source: Option<&'a str>,
    /// Objects deleted in the same transaction (a source's prune).
    pub delete: &'a [WorkloadRef],
    /// The mod revision each object's key had when the set was planned (0: absent);
    /// when given, a key that changed since fails the apply instead of being retried.
    pub expect: Option<&'a HashMap<String, u64>>,
}

/// How long an answered apply or delete waits for this server's cache to hold its
/// commit.
const CACHE_CATCH_UP: std::time::Duration = std::time::Duration::from_secs(5);

/// Read your writes: an apply or delete answers once this server's cache holds its
/// commit `rev`, so a `describe` or `get` right after it (they read the cache) sees it.
/// Bounded: the commit is durable either way, and a cache whose watch is broken must
/// not hold the client forever.
pub(crate) async fn read_your_writes(s: &Shared, rev: u64) {
    if tokio::time::timeout(CACHE_CATCH_UP, s.wait_for_rev(rev))
        .await
        .is_err()
    {
        tracing::warn!(
            rev,
            "committed, but this server's cache has not caught up yet"
        );
    }
}

/// Checks a parsed, sealed set against the cluster and applies it (and `how.delete`)
/// in one transaction: all or nothing.
pub(crate) async fn apply_set(
    s: &Shared,
    docs: &[manifest::Document],
    how: &ApplyAs<'_>,
) -> ApiResult<ObjectResults> {
    let limits = {
        let c = s.cache();
        c.nodes
            .values()
            .fold(None, |acc: Option<ClusterLimits>, n| {
                let mut l = acc.unwrap_or_default();
                l.max_cpu = l.max_cpu.max(n.capacity.cpu.0);
                l.max_memory = l.max_memory.max(n.capacity.memory.0);
                Some(l)
            })
    };
    if let Some(limits) = limits {
        let details = manifest::check_against_cluster(docs, &limits);
        if !details.is_empty() {
            return Err(invalid(details));
        }
    }
    let details = crate::namespaces::check_set(s, docs);
    if !details.is_empty() {
        return Err(invalid(details));
    }
    // An ingress route belongs to one service.
    {
        let c = s.cache();
        let existing = c
            .workloads
            .values()
            .filter_map(|w| match &w.spec {
                Spec::Service(svc) if !svc.expose.is_empty() || !svc.expose_tcp.is_empty() => {
                    Some((
                        motley_core::model::dns_name(w.spec.namespace(), &svc.name),
                        svc.expose
                            .iter()
                            .map(|e| (e.host.clone(), e.path.clone()))
                            .chain(
                                svc.expose_tcp
                                    .iter()
                                    .map(|t| manifest::tcp_key(t.node_port)),
                            )
                            .collect(),
                    ))
                }
                _ => None,
            })
            .collect();
        let details = manifest::expose_conflicts(docs, &existing);
        if !details.is_empty() {
            return Err(invalid(details));
        }
    }
    // A bound volume keeps its class and never shrinks: its data is on that disk.
    {
        let c = s.cache();
        let mut details = Vec::new();
        for d in docs {
            let (Spec::Volume(new), Some(old)) = (&d.spec, c.workloads.get(&d.spec.reference()))
            else {
                continue;
            };
            let (Spec::Volume(prev), Some(b)) = (&old.spec, &old.binding) else {
                continue;
            };
            if new.class != prev.class {
                details.push(d.error_at(
                    "class",
                    format!(
                        "volume {} is bound to {} ({} on {}); its class stays {}",
                        new.name,
                        b.node,
                        b.mount,
                        b.media.as_str(),
                        prev.class.as_str()
                    ),
                ));
            }
            if new.size < prev.size {
                details.push(d.error_at(
                    "size",
                    format!(
                        "volume {} is bound to {}; it may grow but not shrink below {}",
                        new.name, b.node, prev.size
                    ),
                ));
            }
        }
        if !details.is_empty() {
            return Err(invalid(details));
        }
    }
    // The platforms of the images named, read before the transaction (IO).
    let platforms = image_platforms(s, docs).await;
    use motley_core::admit::{Current, revise};
    let users = crate::configs::users_outside(s, docs);
    let (st, platforms, users) = (s, &platforms, &users);
    let outcome = motley_store::update(
        &*s.store,
        || async move {
            let s = st;
            let now = now_ms();
            let (versions, mut txn) = crate::configs::versions(s, docs, users, Txn::new()).await?;
            let mut results = Vec::new();
            let mut created = std::collections::BTreeSet::new();
            for d in docs {
                let spec = crate::configs::stamped(&d.spec, &versions);
                let r = d.spec.reference();
                let key = keys::workload(&r);
                let current = s.store.get(&key).await?;
                expect_unchanged(how, &key, current.as_ref(), &r)?;
                let stored = current
                    .as_ref()
                    .map(|kv| serde_json::from_slice::<Workload>(&kv.value));
                let (action, next) = match &stored {
                    None => revise(Current::Absent, &spec, now, motley_net::new_id),
                    Some(Err(_)) => revise(Current::Unreadable, &spec, now, motley_net::new_id),
                    Some(Ok(w)) => revise(Current::Stored(w), &spec, now, motley_net::new_id),
                };
                txn = txn.when(&key, current.as_ref().map_or(0, |kv| kv.mod_revision));
                // A source's object records it; one taken over from the hand is
                // written for that alone.
                let (action, next) = match (how.source, next, &stored) {
                    (Some(src), None, Some(Ok(w))) if w.source.as_deref() != Some(src) => {
                        (motley_core::admit::Action::Configured, Some(w.clone()))
                    }
                    (_, next, _) => (action, next),
                };
                if let Some(mut w) = next {
                    if let Some(src) = how.source {
                        w.source = Some(src.to_string());
                    }
                    if let Some(image) = &w.spec.task().image {
                        w.image_platforms = platforms.get(image).cloned().unwrap_or_default();
                    }
                    let v = serde_json::to_vec(&w).map_err(|e| {
                        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
                    })?;
                    txn = txn.put(key, v);
                }
                if action == motley_core::admit::Action::Created {
                    created.insert(r.namespace.clone());
                }
                results.push(ObjectResult::of(&r, action.as_str()));
            }
            txn =
                crate::configs::restamp_users(s, users, &versions, now, txn, &mut results).await?;
            txn = crate::namespaces::guard(s, txn, docs, &created).await?;
            for r in how.delete {
                crate::namespaces::refuse_nonempty(s, r, how.delete).await?;
                let key = keys::workload(r);
                let current = s.store.get(&key).await?;
                expect_unchanged(how, &key, current.as_ref(), r)?;
                txn = delete_op(s, txn, r, current.as_ref(), &mut results);
            }
            let out = ObjectResults { results };
            let dry_run = how.dry_run || motley_core::mutants::active("ack-before-commit");
            Ok::<_, ApiError>(if dry_run {
                motley_store::Attempt::Done(out)
            } else {
                motley_store::Attempt::Write(txn, out)
            })
        },
        || {
            s.metrics
                .conflicts
                .get_or_create(&crate::metrics::CallerLabel { caller: "apply" })
                .inc();
        },
    )
    .await?;
    match outcome {
        motley_store::Updated::Committed(out, rev) => {
            read_your_writes(s, rev).await;
            // A new or changed source syncs now, not at the loop's next turn.
            if docs.iter().any(|d| d.spec.kind() == Kind::Source) {
                s.sources.wake.notify_one();
            }
            Ok(out)
        }
        motley_store::Updated::Unchanged(out) => Ok(out),
        motley_store::Updated::Conflicted => Err(ApiError::new(
            StatusCode::CONFLICT,
            "the objects kept changing concurrently; nothing was applied",
        )),
    }
}

/// Deleting `r` (stored as `current`) in `txn`, guarded by its revision, with a result
/// for it in `results`. What goes with it goes in the same transaction: a source's
/// record, and a periodic job's runs (as this server's cache knows them, a result each).
pub(crate) fn delete_op(
    s: &Shared,
    mut txn: Txn,
    r: &WorkloadRef,
    current: Option<&motley_store::KeyValue>,
    results: &mut Vec<ObjectResult>,
) -> Txn {
    let action = match current {
        Some(kv) => {
            txn = txn.when(&kv.key, kv.mod_revision).delete(kv.key.clone());
            match r.kind {
                Kind::Source => txn = txn.delete(keys::source_record(&r.name)),
                Kind::Job => {
                    let cache = s.cache();
                    for (run, _, _) in reconcile::periodic_runs_in(&cache.workloads, r) {
                        txn = txn.delete(keys::workload(run));
                        results.push(ObjectResult::of(run, "deleted"));
                    }
                }
                _ => {}
            }
            "deleted"
        }
        None => "not found",
    };
    results.push(ObjectResult::of(r, action));
    txn
}

/// With an expected revision (a source's plan), a key that changed since fails.
fn expect_unchanged(
    how: &ApplyAs<'_>,
    key: &str,
    current: Option<&motley_store::KeyValue>,
    r: &WorkloadRef,
) -> ApiResult<()> {
    let Some(expect) = how.expect else {
        return Ok(());
    };
    let (want, now) = (
        expect.get(key).copied().unwrap_or(0),
        current.map_or(0, |kv| kv.mod_revision),
    );
    if want != now {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("{r} changed since the plan (revision {want}, now {now}); nothing was applied"),
        ));
    }
    Ok(())
}

/// The platforms of every image the documents name (read from the registries, cached).
async fn image_platforms(
    s: &Shared,
    docs: &[manifest::Document],
) -> HashMap<String, Vec<motley_core::platform::Platform>> {
    let mut platforms: HashMap<String, Vec<motley_core::platform::Platform>> = HashMap::default();
    for d in docs {
        // An unchanged spec is not stored again (nor planned anew): no registry call
        // for it (a GitOps loop re-applies the same set again and again).
        let unchanged = s
            .cache()
            .workloads
            .get(&d.spec.reference())
            .is_some_and(|w| w.spec == d.spec);
        if unchanged {
            continue;
        }
        if let Some(image) = &d.spec.task().image
            && !platforms.contains_key(image)
        {
            // A private image's registry wants its credentials (the Secret in this
            // set, else the stored one).
            let auth = d.spec.task().image_secret.as_ref().and_then(|name| {
                let ring = crate::state::read(&s.trust.keyring);
                let r = d.spec.reference().sibling(Kind::Secret, name);
                let in_set = docs.iter().find_map(|x| match &x.spec {
                    Spec::Secret(sec) if x.spec.reference() == r => Some(sec.clone()),
                    _ => None,
                });
                let found = match in_set {
                    Some(sec) => crate::secrets::registry_credentials_of(&ring, &sec),
                    None => crate::secrets::registry_credentials(&ring, &s.cache().workloads, &r),
                };
                found.ok().map(
                    |(user, password)| motley_containerd::registry::Credentials { user, password },
                )
            });
            let p = s.images.platforms(image, auth).await;
            platforms.insert(image.clone(), p);
        }
    }
    platforms
}

/// One reconcile against the live cluster as if `docs` were applied and `delete`
/// deleted: what it would place, stop, bind and queue. Nothing is stored.
/// The workloads as they would be after `docs` are applied and `delete` deleted (the
/// live ones otherwise), each object's action (created, configured, unchanged,
/// deleted, not found), and the cache they were taken from.
pub(crate) async fn planned_workloads(
    s: &Shared,
    docs: &[manifest::Document],
    delete: &[WorkloadRef],
) -> (
    std::collections::BTreeMap<WorkloadRef, Workload>,
    Vec<ObjectResult>,
) {
    let platforms = image_platforms(s, docs).await;
    let cache = s.cache();
    let now = now_ms();
    let mut workloads = cache.workloads.clone();
    drop(cache);
    let platforms_of = |spec: &Spec| {
        spec.task()
            .image
            .as_ref()
            .and_then(|i| platforms.get(i).cloned())
            .unwrap_or_default()
    };
    let mut objects = Vec::new();
    for r in delete {
        let found = workloads.remove(r).is_some();
        objects.push(ObjectResult::of(
            r,
            if found { "deleted" } else { "not found" },
        ));
    }
    for d in docs {
        let r = d.spec.reference();
        let action = match workloads.get_mut(&r) {
            // A plan never compares secret values: that would tell a viewer whether a
            // guess is right.
            Some(_) if r.kind == Kind::Secret => "configured",
            Some(w) if w.spec == d.spec => "unchanged",
            Some(w) => {
                w.spec = d.spec.clone();
                w.generation += 1;
                w.updated_at = now;
                w.image_platforms = platforms_of(&d.spec);
                "configured"
            }
            None => {
                workloads.insert(
                    r.clone(),
                    Workload {
                        image_platforms: platforms_of(&d.spec),
                        ..Workload::created(d.spec.clone(), format!("plan-{}", r.name), now)
                    },
                );
                "created"
            }
        };
        objects.push(ObjectResult::of(&r, action));
    }
    // The users of a changed Config roll with it.
    for r in crate::configs::users_outside(s, docs) {
        let next = workloads
            .get(&r)
            .and_then(|w| motley_core::config::restamped(w, &workloads, now));
        if let Some(next) = next {
            workloads.insert(r.clone(), next);
            objects.push(ObjectResult::of(&r, "configured"));
        }
    }
    (workloads, objects)
}

pub(crate) async fn plan_set(
    s: &Shared,
    docs: &[manifest::Document],
    delete: &[WorkloadRef],
) -> motley_core::api::PlanResponse {
    use motley_core::api::{PlanResponse, PlannedPlacement, PlannedStop};
    let (workloads, objects) = planned_workloads(s, docs, delete).await;
    let cache = s.cache();
    let now = now_ms();
    struct PlanIds(u64);
    impl reconcile::Ids for PlanIds {
        fn next_id(&mut self, _: &WorkloadRef) -> String {
            self.0 += 1;
            format!("planned-{}", self.0)
        }
    }
    let p = s.plan_pass(&cache, &workloads, now, &mut PlanIds(0), None);
    let stops = p
        .stop
        .iter()
        .chain(p.lost.iter())
        .filter_map(|(id, reason)| {
            let a = cache.allocs.get(id)?;
            Some(PlannedStop {
                alloc: id.clone(),
                workload: a.workload.clone(),
                node: a.node.clone(),
                reason: reason.clone(),
            })
        })
        .collect();
    PlanResponse {
        objects,
        placements: p
            .create
            .into_iter()
            .map(|a| PlannedPlacement {
                workload: a.workload,
                index: a.index,
                node: a.node,
                gpus: a.gpus,
                volumes: a.volumes,
            })
            .collect(),
        stops,
        bind: p
            .bind
            .into_iter()
            .map(|(r, b)| (r.scoped_name(), b))
            .collect(),
        blocked: p.blocked.into_iter().collect(),
        queue: p.queue,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docs(text: &str) -> Vec<manifest::Document> {
        match manifest::parse_set(&[manifest::Source {
            name: "t.yaml",
            text,
        }]) {
            Ok(d) => d,
            Err(e) => panic!("{e:?}"),
        }
    }

    /// A Config's version is stamped into the tasks that use it when either is applied;
    /// a changed Config rewrites its users outside the set (a new generation, which
    /// rolls a service) in the same apply; an unchanged one, or the user applied again
    /// as written, changes nothing.
    #[tokio::test]
    async fn a_changed_config_rewrites_its_users_and_nothing_else() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = crate::state::tests::shared(dir.path());
        s.start_cache().await.expect("cache");
        let config = |v: &str| {
            docs(&format!(
                "kind: Config\nname: app\ndata:\n  app.ini: \"{v}\"\n  other: x\n"
            ))
        };
        let web = docs(
            "kind: Service\nname: web\ntask:\n  command: [x]\n  configs:\n  - {config: app, key: app.ini, file: /etc/app.ini}\n",
        );
        let plain = docs("kind: Service\nname: plain\ntask:\n  command: [x]\n");
        let mut set = config("a=1");
        set.extend(web.clone());
        set.extend(plain.clone());
        apply_set(&s, &set, &ApplyAs::default())
            .await
            .expect("apply");
        let stored = |name: &str| {
            let r = WorkloadRef::in_namespace("default", Kind::Service, name);
            let c = s.cache();
            let w = c.workloads.get(&r).expect("stored");
            (
                w.generation,
                w.spec
                    .task()
                    .configs
                    .first()
                    .and_then(|c| c.version.clone()),
            )
        };
        let v1 = match &config("a=1")[0].spec {
            Spec::Config(c) => motley_core::config::version(c),
            _ => unreachable!("a config"),
        };
        assert_eq!(stored("web"), (1, Some(v1.clone())));
        // The user as written (no version) applied again: unchanged.
        let out = apply_set(&s, &web, &ApplyAs::default())
            .await
            .expect("again");
        assert_eq!(out.results[0].action, "unchanged");
        // The same config again: nothing rewritten.
        let out = apply_set(&s, &config("a=1"), &ApplyAs::default())
            .await
            .expect("same");
        assert_eq!(out.results.len(), 1, "{:?}", out.results);
        assert_eq!(stored("web").0, 1);
        // A changed config: web gets the new version and a new generation; plain not.
        let out = apply_set(&s, &config("a=2"), &ApplyAs::default())
            .await
            .expect("change");
        let actions: Vec<(String, String)> = out
            .results
            .iter()
            .map(|r| (r.name.clone(), r.action.clone()))
            .collect();
        assert!(
            actions.contains(&("web".into(), "configured".into())),
            "{actions:?}"
        );
        let (generation, version) = stored("web");
        assert_eq!(generation, 2);
        assert!(version.is_some() && version != Some(v1), "{version:?}");
        assert_eq!(stored("plain").0, 1);
    }

    /// Read your writes: once an apply has answered, this server's cache (what
    /// `describe` and `get` read) holds what it wrote, and a delete likewise.
    #[tokio::test]
    async fn an_answered_apply_is_in_the_cache() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = crate::state::tests::shared(dir.path());
        s.start_cache().await.expect("cache");
        let docs = match manifest::parse_set(&[manifest::Source {
            name: "t.yaml",
            text: "kind: Service\nname: web\nreplicas: 2\ntask:\n  command: [x]\n",
        }]) {
            Ok(d) => d,
            Err(e) => panic!("{e:?}"),
        };
        let r = docs[0].spec.reference();
        for _ in 0..20 {
            apply_set(&s, &docs, &ApplyAs::default())
                .await
                .expect("apply");
            assert!(s.cache().workloads.contains_key(&r), "applied, not cached");
            let del = [r.clone()];
            let how = ApplyAs {
                delete: &del,
                ..ApplyAs::default()
            };
            apply_set(&s, &[], &how).await.expect("prune");
            assert!(
                !s.cache().workloads.contains_key(&r),
                "pruned, still cached"
            );
            apply_set(&s, &docs, &ApplyAs::default())
                .await
                .expect("apply again");
            crate::api::workloads::delete_refs(&s, &del, false)
                .await
                .expect("delete");
            assert!(
                !s.cache().workloads.contains_key(&r),
                "deleted, still cached"
            );
        }
    }
}
