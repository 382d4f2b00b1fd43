//! What the agent does with each message from its server, and the Hello it opens each
//! connection with.

use tokio::sync::mpsc;

use motley_core::proto::{AgentMsg, ServerMsg};

use crate::{Agent, lock, logs};

impl Agent {
    pub(crate) fn handle(&self, msg: ServerMsg, out: &mpsc::UnboundedSender<AgentMsg>) {
        match msg {
            // The session renews the lease from these (`conn::session`).
            ServerMsg::Welcome { .. } | ServerMsg::Ack { .. } => {}
            ServerMsg::Servers { servers } => self.learn_servers(&servers),
            ServerMsg::Sync { allocs, secrets } => {
                lock(&self.inner.secrets.values).extend(secrets);
                self.sync(allocs)
            }
            ServerMsg::Upsert { alloc, secrets } => {
                if let Some(d) = secrets {
                    lock(&self.inner.secrets.values).insert(alloc.id.clone(), *d);
                }
                self.upsert(*alloc)
            }
            ServerMsg::Remove { id } => self.remove(&id),
            ServerMsg::Logs {
                req,
                alloc,
                tail_bytes,
                follow,
            } => {
                let known = self.inner.local.state().allocs.contains_key(&alloc);
                if !known {
                    let _ = out.send(AgentMsg::LogData {
                        req,
                        data: String::new(),
                        eof: true,
                        error: Some(format!(
                            "allocation {alloc} is not on node {}",
                            self.inner.cfg.name
                        )),
                    });
                    return;
                }
                let agent = self.clone();
                let id = alloc.clone();
                let done = move || {
                    agent
                        .inner
                        .local
                        .state()
                        .allocs
                        .get(&id)
                        .is_none_or(|l| l.report.state.is_terminal())
                };
                // Values of 4 characters or more: shorter ones would mask ordinary words.
                let mask: Vec<String> = lock(&self.inner.secrets.values)
                    .get(&alloc)
                    .map(|d| {
                        d.values()
                            .filter(|v| v.chars().count() >= 4)
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default();
                let task = motley_rt::spawn(logs::serve(
                    self.log_dir_of(&alloc),
                    req,
                    tail_bytes,
                    follow,
                    out.clone(),
                    done,
                    mask,
                ));
                lock(&self.inner.log_tasks).insert(req, task.abort_handle());
            }
            ServerMsg::Catalog { catalog } => {
                self.inner
                    .catalog
                    .send_replace(std::sync::Arc::new(catalog));
            }
            ServerMsg::Fault {
                id,
                fault,
                lasts_ms,
            } => self.fault(id, fault, lasts_ms),
            ServerMsg::Undo { id } => {
                let agent = self.clone();
                motley_rt::spawn(async move { agent.undo_fault(&id).await });
            }
            ServerMsg::LogsCancel { req } => {
                if let Some(t) = lock(&self.inner.log_tasks).remove(&req) {
                    t.abort();
                }
            }
        }
    }

    /// The Hello message, and installing `out` as the live channel, atomically with
    /// respect to reports: every report is either in the Hello or sent on `out`.
    pub(crate) fn hello(&self, out: mpsc::UnboundedSender<AgentMsg>) -> AgentMsg {
        let st = self.inner.local.state();
        self.inner.contact.attach(out);
        let obs = lock(&self.inner.node.observed);
        AgentMsg::Hello {
            version: motley_core::proto::PROTOCOL_VERSION,
            node: self.inner.cfg.name.clone(),
            facts: obs.facts.clone(),
            labels: self.inner.cfg.labels.clone(),
            allocs: st.allocs.values().map(|l| l.report.clone()).collect(),
            readings: Some(Box::new(obs.readings.clone())),
            address: self.inner.cfg.advertise,
        }
    }

    pub(crate) fn set_connected(&self, up: bool) {
        self.inner.metrics.connected.set(up as i64);
        self.inner.contact.set_connected(up);
    }
}
