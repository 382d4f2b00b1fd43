//! The loops of several servers on one etcd (see `crate::ha` for the rules): register,
//! campaign, follow the other servers, and act on this server when it wins or loses.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use motley_core::api::ServerInfo;
use motley_store::{EventKind, Leases, StoreError};

use crate::ha::{LEADER, PREFIX, Term, server_key};
use crate::state::Shared;
use crate::util::{lock, now_ms};

/// Starts registration, the election and the watch on the other servers (etcd only).
/// Returns once the current registrations are loaded.
pub async fn start(shared: &Arc<Shared>) -> Result<(), StoreError> {
    let Some(etcd) = shared.ha.etcd.clone() else {
        return Ok(());
    };
    let rev = load(shared, &*etcd).await?;
    motley_rt::spawn(follow(shared.clone(), etcd.clone(), rev));
    motley_rt::spawn(campaign(shared.clone(), etcd));
    Ok(())
}

/// Gives up leadership and registration at once (on SIGTERM), so another server leads
/// without waiting for the lease to run out.
pub async fn resign(shared: &Arc<Shared>) {
    let Some(etcd) = shared.ha.etcd.clone() else {
        return;
    };
    shared
        .ha
        .resigned
        .store(true, std::sync::atomic::Ordering::SeqCst);
    step_down(shared, "shutting down");
    let lease = lock(&shared.ha.lease).take();
    if let Some(id) = lease
        && let Err(e) = etcd.lease_revoke(id).await
    {
        tracing::warn!("revoking the server lease: {e}");
    }
}

async fn load(shared: &Arc<Shared>, etcd: &dyn Leases) -> Result<u64, StoreError> {
    let range = etcd.range(PREFIX).await?;
    let mut servers = BTreeMap::new();
    servers.insert(shared.ha.me.id.clone(), shared.ha.me.clone());
    let mut leader = None;
    for kv in &range.kvs {
        let Ok(info) = serde_json::from_slice::<ServerInfo>(&kv.value) else {
            continue;
        };
        if kv.key == LEADER {
            leader = Some(info);
        } else {
            servers.insert(info.id.clone(), info);
        }
    }
    *lock(&shared.ha.servers) = servers;
    shared.ha.observed.send_replace(leader);
    shared.ha.update_client_file();
    Ok(range.revision)
}

/// Follows registrations and the leader key.
async fn follow(shared: Arc<Shared>, etcd: Arc<dyn Leases>, mut rev: u64) {
    loop {
        match etcd.watch(PREFIX, rev + 1).await {
            Ok(mut w) => {
                while let Some(group) = w.recv().await {
                    let Ok(group) = group else { break };
                    for ev in group {
                        rev = rev.max(ev.revision());
                        let info = serde_json::from_slice::<ServerInfo>(&ev.kv.value).ok();
                        let put = ev.kind == EventKind::Put;
                        if ev.kv.key == LEADER {
                            shared.ha.observed.send_replace(info.filter(|_| put));
                        } else if let Some(id) = ev.kv.key.strip_prefix(&server_key("")) {
                            let mut servers = lock(&shared.ha.servers);
                            match info.filter(|_| put) {
                                Some(i) => {
                                    servers.insert(id.to_string(), i);
                                }
                                None if id != shared.ha.me.id => {
                                    servers.remove(id);
                                }
                                None => {}
                            }
                            drop(servers);
                            shared.ha.update_client_file();
                            if put {
                                announce(&shared);
                            }
                        }
                    }
                }
            }
            Err(e) => tracing::debug!("watching the servers: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        match load(&shared, &*etcd).await {
            Ok(r) => rev = r,
            Err(e) => tracing::debug!("loading the servers: {e}"),
        }
    }
}

/// Holds a lease, registers, campaigns; forever.
async fn campaign(shared: Arc<Shared>, etcd: Arc<dyn Leases>) {
    let ttl = shared.ha.lease_ttl;
    // Renew three times per lease; step down before it can have run out anywhere.
    let renew_every = ttl / 3;
    let step_down_after = ttl.mul_f64(5.0 / 6.0);
    let me = shared.ha.me.clone();
    let Ok(me_json) = serde_json::to_vec(&me) else {
        return;
    };
    let mut observed = shared.ha.observed.subscribe();
    loop {
        let asked = Instant::now();
        let lease = match etcd.lease_grant(ttl).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!("cannot take a server lease: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        *lock(&shared.ha.lease) = Some(lease);
        let mut renewed = asked;
        let mut tried = asked;
        let mut registered = false;
        // The leader key written with this lease, if any: (fence, record).
        let mut won: Option<(u64, ServerInfo)> = None;
        loop {
            if shared.ha.resigned.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            if !registered {
                registered = etcd
                    .put_leased(&server_key(&me.id), me_json.clone(), lease, false)
                    .await
                    .is_ok();
            }
            let observed_me = shared
                .ha
                .observed
                .borrow()
                .as_ref()
                .is_some_and(|l| l.id == me.id);
            if shared.ha.leading().is_none()
                && observed_me
                && renewed.elapsed() < step_down_after
                && let Some((fence, record)) = won.clone()
            {
                // Stepped down for want of renewals, but the key (on this same lease)
                // is still ours and the lease is renewed again: lead on.
                become_leader(&shared, fence, record);
            }
            if shared.ha.leading().is_none() && shared.ha.observed.borrow().is_none() {
                let mut record = me.clone();
                record.leader = true;
                record.leading_since = Some(now_ms());
                let value = serde_json::to_vec(&record).unwrap_or_default();
                match etcd.put_leased(LEADER, value, lease, true).await {
                    Ok(Some(fence)) => {
                        won = Some((fence, record.clone()));
                        if renewed.elapsed() < step_down_after {
                            become_leader(&shared, fence, record);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::debug!("campaign: {e}"),
                }
            }
            // Wait for the next renewal, or for the leader key to go. After a failed one
            // the next is already due: retry ten times per renewal period, not in a loop.
            let next = (renewed + renew_every).max(tried + renew_every / 10);
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                _ = observed.changed() => continue,
            }
            let asked = Instant::now();
            tried = asked;
            match etcd.lease_renew(lease).await {
                Ok(true) => renewed = asked,
                Ok(false) => {
                    step_down(&shared, "the server lease ran out");
                    break;
                }
                Err(e) => tracing::warn!("renewing the server lease: {e}"),
            }
            if renewed.elapsed() >= step_down_after {
                step_down(&shared, "the server lease could not be renewed");
            }
            if renewed.elapsed() >= ttl {
                break;
            }
        }
        lock(&shared.ha.lease).take();
    }
}

/// Tells the agents connected here of every server (only the leader holds agents).
fn announce(shared: &Shared) {
    let servers = shared.ha.urls();
    shared
        .hub
        .broadcast(&motley_core::proto::ServerMsg::Servers { servers });
}

fn become_leader(shared: &Arc<Shared>, fence: u64, record: ServerInfo) {
    let since = record.leading_since.unwrap_or_else(now_ms);
    tracing::info!("leading the control plane (fence revision {fence})");
    // A new leader knows nothing of the nodes' heartbeats: every node gets a full grace
    // period from now before it can be declared down.
    shared.liveness.begin_grace(since);
    shared.ha.observed.send_replace(Some(record));
    shared.ha.term.send_replace(Some(Term { fence, since }));
    shared.metrics.leader.set(1);
    shared.metrics.leader_terms.inc();
    shared.events.push(motley_core::events::New::about(
        motley_core::events::EventKind::LeaderChanged,
        format!("server/{}", shared.ha.me.name),
        format!("{} leads (fence revision {fence})", shared.ha.me.name),
    ));
    shared.plans.kick.notify_one();
}

fn step_down(shared: &Arc<Shared>, why: &str) {
    if shared.ha.term.send_replace(None).is_some() {
        shared.metrics.leader.set(0);
        tracing::warn!("no longer leading: {why}");
        shared.plans.kick.notify_one();
    }
}
