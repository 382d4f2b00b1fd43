//! The agent's local state: its assignments, the handles of their processes
//! and the last report of each, in `<data-dir>/agent/state.json`.
//!
//! Written atomically, and only when its content changes (an assignment
//! arrives or goes, a process starts or ends): an idle agent writes nothing. Changes
//! that come in a burst are written once (the agent's writer task coalesces them).
//! [`Local`] is the agent's part that owns the state and its file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use motley_core::model::Allocation;
use motley_core::proto::AllocReport;
use serde::{Deserialize, Serialize};

use crate::driver::Handle;

/// One assignment as the agent holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocalAlloc {
    /// The allocation as last received.
    pub alloc: Allocation,
    /// Its running process, if any.
    pub handle: Option<Handle>,
    /// What the agent last observed.
    pub report: AllocReport,
    /// Where its output goes (the allocation's directory, or a tmpfs one).
    #[serde(default)]
    pub log_dir: Option<PathBuf>,
    /// Of `report.restarts`, those after exits nobody saw: not counted against the
    /// retries (`motley_core::restart::decide`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub uncounted: u32,
    /// Ended, and the server has echoed that end back: nothing about it needs to
    /// survive an agent restart any more (the server holds it), so it is not written.
    #[serde(skip)]
    pub settled: bool,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Everything the agent persists.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LocalState {
    /// Assignments by id.
    pub allocs: BTreeMap<String, LocalAlloc>,
}

/// The state file and the bytes last written, to skip writes that change nothing.
pub struct StateFile {
    path: PathBuf,
    last: Vec<u8>,
}

impl StateFile {
    /// Loads the state (empty if the file does not exist). A file that does not decode
    /// (cut short by a power loss: it is not fsynced, being for surviving the agent,
    /// not the machine) is moved aside to `state.json.corrupt` and the agent starts
    /// empty: after a power cut no task survived, and any that did is found by its
    /// `MOTLEY_ALLOC_ID` and settled with the server's full set, as after a crash
    /// before the first write. Refusing to start would keep the node out until someone
    /// deleted the file by hand.
    pub fn load(dir: &Path) -> anyhow::Result<(StateFile, LocalState)> {
        let path = dir.join("state.json");
        let (state, last) = match std::fs::read(&path) {
            Ok(bytes) => match StateFile::decode(&bytes) {
                Ok(state) => (state, bytes),
                Err(e) => {
                    let aside = dir.join("state.json.corrupt");
                    std::fs::rename(&path, &aside).map_err(|r| {
                        anyhow::anyhow!(
                            "{}: {e}; moving it to {}: {r}",
                            path.display(),
                            aside.display()
                        )
                    })?;
                    tracing::error!(
                        "{}: {e}; moved to {} and starting with no local state (tasks still running are found by their allocation id)",
                        path.display(),
                        aside.display()
                    );
                    (LocalState::default(), Vec::new())
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                (LocalState::default(), Vec::new())
            }
            Err(e) => return Err(anyhow::anyhow!("{}: {e}", path.display())),
        };
        Ok((StateFile { path, last }, state))
    }

    /// Reads the file's bytes.
    pub fn decode(bytes: &[u8]) -> Result<LocalState, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// The bytes the file would hold for `state`. Settled allocations (ended, and known
    /// ended by the server) are left out: the file holds what runs and what the server
    /// has yet to hear, so its size, and the cost of each write, does not grow with
    /// every job the node ever ran.
    pub fn encode(state: &LocalState) -> anyhow::Result<Vec<u8>> {
        #[derive(Serialize)]
        struct Kept<'a> {
            allocs: BTreeMap<&'a String, &'a LocalAlloc>,
        }
        let kept = Kept {
            allocs: state.allocs.iter().filter(|(_, l)| !l.settled).collect(),
        };
        Ok(serde_json::to_vec(&kept)?)
    }

    /// Replaces the file with `bytes` unless it already holds them. Atomic (a restarted
    /// agent reads the old state or the new, whole) but not synced to the disk: the file
    /// exists to survive the agent process, and the processes it names do not survive
    /// the machine (see docs/ARCHITECTURE.md, "The agent state file").
    pub fn write(&mut self, bytes: Vec<u8>) -> anyhow::Result<()> {
        if bytes == self.last {
            return Ok(());
        }
        motley_net::write_replace(&self.path, &bytes, 0o600)?;
        self.last = bytes;
        Ok(())
    }
}

/// The local state, its file, and the signal that wakes the writer: the part of the
/// agent that owns what survives an agent restart.
pub struct Local {
    state: Mutex<LocalState>,
    file: Mutex<StateFile>,
    dirty: tokio::sync::Notify,
}

impl Local {
    /// An empty state over `file` (the agent adopts what the file held, one by one).
    pub fn new(file: StateFile) -> Local {
        Local {
            state: Mutex::new(LocalState::default()),
            file: Mutex::new(file),
            dirty: tokio::sync::Notify::new(),
        }
    }

    /// The state, locked.
    pub fn state(&self) -> MutexGuard<'_, LocalState> {
        crate::lock(&self.state)
    }

    /// Asks the writer to bring the file up to date soon.
    pub fn save(&self) {
        self.dirty.notify_one();
    }

    /// Waits until something asked for a save.
    pub async fn dirtied(&self) {
        self.dirty.notified().await;
    }

    /// Writes the file now if its content changed; `seen` looks at the state being
    /// written (the agent's task gauges). The file lock is held throughout so that
    /// writes happen in the order of the states they encode.
    pub fn flush(&self, seen: impl FnOnce(&LocalState)) {
        let mut file = crate::lock(&self.file);
        let encoded = {
            let state = self.state();
            seen(&state);
            StateFile::encode(&state)
        };
        if let Err(e) = encoded.and_then(|bytes| file.write(bytes)) {
            tracing::error!("saving agent state: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The state file an older agent wrote is read by this one (an upgrade replaces the
    /// binary under running tasks: the new agent must know what the old one ran).
    #[test]
    fn a_state_file_written_by_0_1_0_is_read() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/protocol/0.1.0/agent-state.json");
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let state = StateFile::decode(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(state.allocs.len(), 3, "{state:?}");
        assert!(
            state
                .allocs
                .values()
                .any(|a| a.alloc.workload.to_string() == "daemon/heartbeat")
        );
    }

    #[test]
    fn a_state_file_cut_short_is_moved_aside_and_the_agent_starts_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cut = br#"{"allocs":{"web-1":{"alloc":{"id":"web-1","work"#;
        std::fs::write(dir.path().join("state.json"), cut).expect("write");
        let (file, state) = match StateFile::load(dir.path()) {
            Ok(loaded) => loaded,
            Err(e) => panic!("a cut state file kept the agent from starting: {e}"),
        };
        assert_eq!(state, LocalState::default());
        assert!(file.last.is_empty());
        assert!(!dir.path().join("state.json").exists());
        let kept = std::fs::read(dir.path().join("state.json.corrupt")).expect("kept aside");
        assert_eq!(kept, cut.to_vec(), "the bad file is kept as it was");
        // A good file still loads as it is.
        std::fs::write(dir.path().join("state.json"), br#"{"allocs":{}}"#).expect("write");
        let (_, state) = StateFile::load(dir.path()).expect("load");
        assert!(state.allocs.is_empty());
        assert!(dir.path().join("state.json").exists());
    }
}
