//! Configs: which version of each Config a task runs, and what a Config's values are
//! as a task receives them.
//!
//! A task names Config values in `task.configs`; the server stamps each reference with
//! the Config's current [`version`] (a digest of its data) whenever it writes the
//! workload, and rewrites every workload that uses a Config when the Config changes
//! ([`stamp`], [`users`]). A stamp that changes is a change of the workload's spec, so
//! services roll through their rolling update like any other change, and each
//! allocation's task says which version it runs (`motley describe`).
//!
//! Invariant: every stored workload's references carry the version of the Config as
//! stored in the same transaction, or none when the Config does not exist.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::{ConfigSpec, Kind, Spec, Task, Workload, WorkloadRef};

/// Largest total size of one Config's values (etcd takes requests up to 1.5 MiB).
pub const MAX_CONFIG_BYTES: usize = 1 << 20;

/// The version of a Config: 12 hex digits of an FNV-1a digest of its keys and values,
/// the same for the same data (re-created or not), different when any value changes.
pub fn version(c: &ConfigSpec) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for (k, v) in &c.data {
        eat(k.as_bytes());
        eat(&[0]);
        eat(v.value.as_deref().unwrap_or_default().as_bytes());
        eat(&[0xff]);
    }
    format!("{:012x}", h >> 16)
}

/// The Configs `spec`'s task references, as references in its namespace.
pub fn referenced(spec: &Spec) -> BTreeSet<WorkloadRef> {
    let me = spec.reference();
    spec.task()
        .configs
        .iter()
        .map(|r| me.sibling(Kind::Config, &r.config))
        .collect()
}

/// `spec` with every Config reference stamped with the version `version_of` gives
/// (none for a Config that does not exist). Returns whether anything changed.
pub fn stamp(spec: &mut Spec, version_of: impl Fn(&WorkloadRef) -> Option<String>) -> bool {
    let me = spec.reference();
    let Some(task) = task_mut(spec) else {
        return false;
    };
    let mut changed = false;
    for r in &mut task.configs {
        let v = version_of(&me.sibling(Kind::Config, &r.config));
        if r.version != v {
            r.version = v;
            changed = true;
        }
    }
    changed
}

fn task_mut(spec: &mut Spec) -> Option<&mut Task> {
    match spec {
        Spec::Service(s) => Some(&mut s.task),
        Spec::Job(s) => Some(&mut s.task),
        Spec::Daemon(s) => Some(&mut s.task),
        _ => None,
    }
}

/// `w` as a new generation with its references stamped with the versions of the
/// Configs in `workloads`, when a stamp differs; `None` when all agree, or when a Config
/// it names does not exist (its new replicas could not start: nothing rolls for that).
pub fn restamped(
    w: &Workload,
    workloads: &BTreeMap<WorkloadRef, Workload>,
    now: u64,
) -> Option<Workload> {
    restamped_with(
        w,
        |r| match workloads.get(r).map(|c| &c.spec) {
            Some(Spec::Config(c)) => Some(version(c)),
            _ => None,
        },
        now,
    )
}

/// [`restamped`] with the Configs' versions from `version_of` (the apply reads them
/// from the store, in its transaction).
pub fn restamped_with(
    w: &Workload,
    version_of: impl Fn(&WorkloadRef) -> Option<String>,
    now: u64,
) -> Option<Workload> {
    if w.spec.task().configs.is_empty() || crate::mutants::active("config-users-not-restamped") {
        return None;
    }
    if referenced(&w.spec).iter().any(|r| version_of(r).is_none()) {
        return None;
    }
    let mut spec = w.spec.clone();
    if !stamp(&mut spec, version_of) {
        return None;
    }
    let (_, next) = crate::admit::revise(crate::admit::Current::Stored(w), &spec, now, String::new);
    next
}

/// The workloads among `workloads` whose tasks use Config `config`.
pub fn users<'a>(
    workloads: impl IntoIterator<Item = &'a Workload>,
    config: &WorkloadRef,
) -> Vec<WorkloadRef> {
    workloads
        .into_iter()
        .filter(|w| w.spec.kind().is_workload() && referenced(&w.spec).contains(config))
        .map(|w| w.spec.reference())
        .collect()
}

/// Config values as a task is given them: (environment variables, files by path).
pub type Values = (BTreeMap<String, String>, BTreeMap<String, String>);

/// The Config values a task of workload `me` is given: environment variables, and files
/// by the path the task names. An error names the Config or key that is missing.
pub fn values(
    workloads: &BTreeMap<WorkloadRef, Workload>,
    me: &WorkloadRef,
    task: &Task,
) -> Result<Values, String> {
    let (mut env, mut files) = (BTreeMap::new(), BTreeMap::new());
    for r in &task.configs {
        let Some(Spec::Config(c)) = workloads
            .get(&me.sibling(Kind::Config, &r.config))
            .map(|w| &w.spec)
        else {
            return Err(format!("config {} not found", r.config));
        };
        let Some(value) = c.data.get(&r.key).and_then(|v| v.value.clone()) else {
            return Err(format!("config {} has no key {}", r.config, r.key));
        };
        if let Some(e) = &r.env {
            env.insert(e.clone(), value);
        } else if let Some(f) = &r.file {
            files.insert(f.clone(), value);
        }
    }
    Ok((env, files))
}

/// The versions of the Configs a task runs, as `name@version` (for `describe`).
pub fn versions_of(task: &Task) -> Vec<String> {
    let mut out: Vec<String> = task
        .configs
        .iter()
        .map(|r| format!("{}@{}", r.config, r.version.as_deref().unwrap_or("?")))
        .collect();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Config, ConfigRef, ConfigValue};

    fn cfg(v: &str) -> ConfigSpec {
        ConfigSpec {
            kind: Config::Config,
            name: "app".into(),
            namespace: None,
            labels: BTreeMap::new(),
            data: [(
                "app.ini".to_string(),
                ConfigValue {
                    value: Some(v.into()),
                    from_file: None,
                },
            )]
            .into(),
        }
    }

    #[test]
    fn a_version_follows_the_data_and_nothing_else() {
        assert_eq!(version(&cfg("a=1")), version(&cfg("a=1")));
        assert_ne!(version(&cfg("a=1")), version(&cfg("a=2")));
        let mut other = cfg("a=1");
        other.name = "renamed".into();
        other.labels.insert("x".into(), "y".into());
        assert_eq!(version(&cfg("a=1")), version(&other));
        // Keys and values cannot be shifted into each other.
        let mut split = cfg("");
        split.data = [(
            "app.inia=1".to_string(),
            ConfigValue {
                value: Some(String::new()),
                from_file: None,
            },
        )]
        .into();
        assert_ne!(version(&cfg("a=1")), version(&split));
        assert_eq!(version(&cfg("x")).len(), 12);
    }

    #[test]
    fn stamping_sets_each_reference_and_says_whether_it_changed() {
        let mut spec: Spec = serde_json::from_value(serde_json::json!({
            "kind": "Service", "name": "web",
            "task": {"command": ["x"], "configs": [
                {"config": "app", "key": "app.ini", "file": "/etc/app.ini"},
                {"config": "gone", "key": "k", "env": "K", "version": "stale"}
            ]}
        }))
        .expect("spec");
        let v = |r: &WorkloadRef| (r.name == "app").then(|| "v1".to_string());
        assert!(stamp(&mut spec, v));
        let refs = &spec.task().configs;
        assert_eq!(refs[0].version.as_deref(), Some("v1"));
        assert_eq!(refs[1].version, None);
        assert!(!stamp(&mut spec, v), "the same versions change nothing");
        assert_eq!(versions_of(spec.task()), ["app@v1", "gone@?"]);
        let w = Workload::created(spec, "u".into(), 0);
        let app = WorkloadRef::in_namespace("default", Kind::Config, "app");
        assert_eq!(users([&w], &app), [w.spec.reference()]);
        let none = WorkloadRef::in_namespace("other", Kind::Config, "app");
        assert!(users([&w], &none).is_empty());
    }

    #[test]
    fn a_user_whose_stamp_lags_its_config_is_restamped_as_a_new_generation() {
        let c = Workload::created(Spec::Config(cfg("a=2")), "c".into(), 0);
        let mut spec: Spec = serde_json::from_value(serde_json::json!({
            "kind": "Service", "name": "web",
            "task": {"command": ["x"], "configs": [
                {"config": "app", "key": "app.ini", "file": "/etc/app.ini", "version": "old"}
            ]}
        }))
        .expect("spec");
        let w = Workload::created(spec.clone(), "w".into(), 0);
        let mut workloads = BTreeMap::from([(c.spec.reference(), c)]);
        let next = restamped(&w, &workloads, 5).expect("restamped");
        assert_eq!(next.generation, 2);
        assert_eq!(next.updated_at, 5);
        assert_eq!(
            next.spec.task().configs[0].version,
            Some(version(&cfg("a=2")))
        );
        assert_eq!(next.history.len(), 1, "the old spec kept for a rollback");
        // Agreeing stamps: nothing to do.
        assert!(restamped(&next, &workloads, 6).is_none());
        // A Config that is gone: no restamp (new replicas could not start).
        workloads.clear();
        assert!(restamped(&w, &workloads, 6).is_none());
        spec.set_namespace("default");
        assert!(restamped(&Workload::created(spec, "x".into(), 0), &workloads, 6).is_none());
    }

    #[test]
    fn values_are_given_by_env_and_file_and_a_missing_one_is_named() {
        let c = Workload::created(Spec::Config(cfg("a=1")), "c".into(), 0);
        let mut workloads = BTreeMap::from([(c.spec.reference(), c)]);
        let me = WorkloadRef::in_namespace("default", Kind::Service, "web");
        let r = |key: &str, env: Option<&str>, file: Option<&str>| ConfigRef {
            config: "app".into(),
            key: key.into(),
            env: env.map(str::to_string),
            file: file.map(str::to_string),
            version: None,
        };
        let mut task: Task =
            serde_json::from_value(serde_json::json!({"command": ["x"]})).expect("task");
        task.configs = vec![
            r("app.ini", Some("APP"), None),
            r("app.ini", None, Some("/etc/a")),
        ];
        let (env, files) = values(&workloads, &me, &task).expect("values");
        assert_eq!(env["APP"], "a=1");
        assert_eq!(files["/etc/a"], "a=1");
        task.configs.push(r("nope", Some("X"), None));
        assert_eq!(
            values(&workloads, &me, &task),
            Err("config app has no key nope".to_string())
        );
        workloads.clear();
        assert_eq!(
            values(&workloads, &me, &task),
            Err("config app not found".to_string())
        );
    }
}
