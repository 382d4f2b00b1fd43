//! Admission: what applying a spec does to the stored object (created, configured or
//! unchanged, and the new version), as a pure function. The server runs it inside its
//! compare-and-swap; `motley plan` and the simulator run the same.

use crate::model::{Spec, Workload};

/// The stored object a spec is applied over.
#[derive(Debug, Clone, Copy)]
pub enum Current<'a> {
    /// No object of that kind and name.
    Absent,
    /// An object whose record cannot be read (written by an incompatible version):
    /// replaced as if new.
    Unreadable,
    /// The stored object.
    Stored(&'a Workload),
}

/// What an apply does to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// A new object (generation 1, a new uid).
    Created,
    /// A changed spec (generation + 1; uid, creation time and binding kept).
    Configured,
    /// The same spec: nothing is written.
    Unchanged,
}

impl Action {
    /// `created`, `configured`, `unchanged`, as the API reports it.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Created => "created",
            Action::Configured => "configured",
            Action::Unchanged => "unchanged",
        }
    }
}

/// Applies `spec` over `current` at `now`: the action and the object to store (none
/// when unchanged). `new_uid` is called only for a new object.
pub fn revise(
    current: Current<'_>,
    spec: &Spec,
    now: u64,
    new_uid: impl FnOnce() -> String,
) -> (Action, Option<Workload>) {
    let fresh = |uid: String| Workload::created(spec.clone(), uid, now);
    match current {
        Current::Absent => (Action::Created, Some(fresh(new_uid()))),
        Current::Unreadable => (Action::Configured, Some(fresh(new_uid()))),
        Current::Stored(w) if w.spec == *spec => (Action::Unchanged, None),
        Current::Stored(w) => {
            let mut next = Workload {
                spec: spec.clone(),
                generation: w.generation + 1,
                updated_at: now,
                rollout: None,
                ..w.clone()
            };
            crate::rollout::push_history(&mut next, w, false);
            (Action::Configured, Some(next))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::parse_set;

    fn spec(yaml: &str) -> Spec {
        let docs = parse_set(&[crate::manifest::Source {
            name: "t.yaml",
            text: yaml,
        }])
        .expect("valid");
        docs[0].spec.clone()
    }

    #[test]
    fn created_configured_unchanged() {
        let a = spec("kind: Service\nname: web\ntask:\n  command: [a]\n");
        let b = spec("kind: Service\nname: web\ntask:\n  command: [b]\n");
        let (act, w) = revise(Current::Absent, &a, 10, || "u1".into());
        let w = w.expect("stored");
        assert_eq!(
            (act, w.generation, w.uid.as_str(), w.created_at),
            (Action::Created, 1, "u1", 10)
        );
        let (act, none) = revise(Current::Stored(&w), &a, 20, || unreachable!("no new uid"));
        assert_eq!((act, none), (Action::Unchanged, None));
        let (act, w2) = revise(Current::Stored(&w), &b, 30, || unreachable!("no new uid"));
        let w2 = w2.expect("stored");
        assert_eq!(act, Action::Configured);
        assert_eq!(
            (w2.generation, w2.uid.as_str(), w2.created_at, w2.updated_at),
            (2, "u1", 10, 30)
        );
        let (act, w3) = revise(Current::Unreadable, &b, 40, || "u2".into());
        assert_eq!(
            (act, w3.map(|w| (w.generation, w.uid))),
            (Action::Configured, Some((1, "u2".into())))
        );
    }
}
