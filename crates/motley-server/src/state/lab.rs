//! The experiment under way on this server (issue 24; one at a time, the leader's) and
//! what its agents answered: memory only. The run itself is `crate::experiments`.

use std::collections::BTreeMap;
use std::sync::Mutex;

use motley_core::experiment_run::Report;
use tokio::sync::Notify;

use crate::util::lock;

/// The lab's state.
#[derive(Default)]
pub struct Lab {
    /// The run under way: its name and its report so far.
    current: Mutex<Option<Report>>,
    /// An admin asked to abort it: who.
    abort: Mutex<Option<String>>,
    /// Agents' answers to fault orders: (node, fault id) → error (None: carried out).
    answers: Mutex<BTreeMap<(String, String), Option<String>>>,
    /// Wakes the run.
    pub wake: Notify,
}

impl Lab {
    /// Takes the lab for a run of `report.name`; refused (with the name running) while
    /// another runs.
    pub fn begin(&self, report: Report) -> Result<(), String> {
        let mut cur = lock(&self.current);
        if let Some(r) = cur.as_ref().filter(|r| !r.phase.ended()) {
            return Err(r.name.clone());
        }
        *cur = Some(report);
        *lock(&self.abort) = None;
        lock(&self.answers).clear();
        Ok(())
    }

    /// The run's report so far.
    pub fn update(&self, report: Report) {
        *lock(&self.current) = Some(report);
    }

    /// The run under way or last run here, by name.
    pub fn current(&self, name: &str) -> Option<Report> {
        lock(&self.current)
            .as_ref()
            .filter(|r| r.name == name)
            .cloned()
    }

    /// The run under way, if any.
    pub fn running(&self) -> Option<Report> {
        lock(&self.current)
            .as_ref()
            .filter(|r| !r.phase.ended())
            .cloned()
    }

    /// Asks the run `name` to end; false when it is not under way here.
    pub fn ask_abort(&self, name: &str, who: &str) -> bool {
        let under_way = lock(&self.current)
            .as_ref()
            .is_some_and(|r| r.name == name && !r.phase.ended());
        if under_way {
            *lock(&self.abort) = Some(who.to_string());
            self.wake.notify_one();
        }
        under_way
    }

    /// Who asked to abort (taken).
    pub fn take_abort(&self) -> Option<String> {
        lock(&self.abort).take()
    }

    /// An agent's answer to a fault order.
    pub fn answered(&self, node: &str, id: String, error: Option<String>) {
        lock(&self.answers).insert((node.to_string(), id), error);
        self.wake.notify_one();
    }

    /// The answers so far (taken).
    pub fn take_answers(&self) -> BTreeMap<(String, String), Option<String>> {
        std::mem::take(&mut *lock(&self.answers))
    }
}
