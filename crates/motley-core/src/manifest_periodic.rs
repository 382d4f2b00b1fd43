//! A Job's periodic fields (`schedule`, `time_zone`, `concurrency`, `missed`,
//! `history`): checked here, decided in [`crate::periodic`].

use super::*;
use crate::periodic::{MAX_HISTORY, MAX_NAME};

/// Problems with `j`'s periodic fields, each located at its field.
pub(super) fn validate(doc: &Document, j: &model::JobSpec, errors: &mut Vec<ManifestError>) {
    let Some(expr) = j.schedule.as_deref() else {
        let stray = [
            ("time_zone", j.time_zone.is_some()),
            ("concurrency", !j.concurrency.is_default()),
            ("missed", !j.missed.is_default()),
            ("history", j.history.is_some()),
            ("suspend", j.suspend),
        ];
        for (field, set) in stray {
            if set {
                errors.push(doc.error_at(
                    field,
                    "only a periodic job (one with `schedule`) takes this",
                ));
            }
        }
        return;
    };
    let cron = match crate::cron::Cron::parse(expr) {
        Ok(c) => Some(c),
        Err(e) => {
            errors.push(doc.error_at("schedule", e));
            None
        }
    };
    let tz = match crate::cron::zone(j.time_zone.as_deref()) {
        Ok(tz) => Some(tz),
        Err(e) => {
            errors.push(doc.error_at("time_zone", e));
            None
        }
    };
    if let (Some(cron), Some(tz)) = (cron, tz)
        && cron.next_after(0, &tz).is_none()
    {
        errors.push(doc.error_at("schedule", format!("{expr:?} never fires")));
    }
    if j.history.is_some_and(|h| h == 0 || h > MAX_HISTORY) {
        errors.push(doc.error_at("history", format!("must be between 1 and {MAX_HISTORY}")));
    }
    if j.name.len() > MAX_NAME {
        errors.push(doc.error_at(
            "name",
            format!(
                "a periodic job's name is at most {MAX_NAME} characters (its runs add `-run-` and the time)"
            ),
        ));
    }
}
