//! The lab's pages (issue 24): the experiments run and one experiment's report, which
//! follows a run under way and offers its abort.

use maud::{Markup, html};
use motley_core::api::ExperimentSummary;
use motley_core::experiment_run::{Phase, Report, describe};
use motley_core::hwview::age;

use crate::{Ctx, Page, action, badge, table};

fn href(name: &str) -> String {
    format!("/ui/experiments/{}", crate::urlencode(name))
}

fn phase_badge(p: Phase, steady: Option<bool>) -> Markup {
    let word = match (p, steady) {
        (Phase::Finished, Some(true)) => "ok",
        (Phase::Finished, _) | (Phase::Aborted, _) => "failed",
        _ => "progressing",
    };
    html! { (badge(word)) " " (p.as_str()) }
}

/// `GET /ui/experiments`.
pub fn experiments(ctx: &Ctx<'_>, rows: &[ExperimentSummary]) -> Page {
    let body = html! {
        p { "Faults carried out on a schedule against a steady state; run with "
            code { "motley experiment run -f FILE" } " (docs/lab.md)." }
        @if rows.is_empty() { p { "No experiment has run." } }
        @else {
            (table("Experiments", &["name", "phase", "steady state", "asked", "why"], html! {
                @for r in rows {
                    tr {
                        th scope="row" { a href=(href(&r.name)) { (r.name) } }
                        td { (phase_badge(r.phase, r.steady)) }
                        td { @match r.steady { Some(true) => "held", Some(false) => "NOT held", None => "-" } }
                        td { (age(r.created, ctx.now)) " ago" }
                        td { (r.why.as_deref().unwrap_or("")) }
                    }
                }
            }))
        }
    };
    Page::live("Experiments", body)
}

/// `GET /ui/experiments/{name}`: the report, as `experiment report` gives it.
pub fn experiment(ctx: &Ctx<'_>, r: &Report) -> Page {
    let v = r.verdict.as_ref();
    let ms = |x: Option<u64>| x.map_or_else(|| "-".to_string(), |m| format!("{m} ms"));
    let (made, failed) = r.requests();
    let body = html! {
        p { (phase_badge(r.phase, v.map(|v| v.steady))) }
        @if let Some(why) = &r.why { p.notice.bad role="alert" { "Aborted: " (why) } }
        @if let Some(v) = v {
            @if v.steady && r.phase == Phase::Finished {
                p.notice { "The steady state held before the faults and came back after them." }
            } @else if !v.steady {
                p.notice.bad { "The steady state did NOT hold." }
            }
        }
        @if !r.phase.ended() {
            (action(ctx, "abort", &r.name, "", "Abort (undo every fault now)"))
        }
        (table("Faults", &["#", "fault", "at", "detected", "replaced"], html! {
            @for (i, f) in r.experiment.faults.iter().enumerate() {
                @let fig = v.and_then(|v| v.faults.iter().find(|x| x.fault == i));
                tr {
                    td { (i) }
                    td { (describe(f)) }
                    td { (f.at) }
                    td { (ms(fig.and_then(|x| x.detected_ms))) }
                    td { (ms(fig.and_then(|x| x.replaced_ms))) }
                }
            }
        }))
        p { "Requests the HTTP probes made: " (made) ", failed: " (failed) "." }
        @if let Some(v) = v {
            p { "Job instances lost: " (v.jobs_lost) "; run twice at once: "
                @if v.jobs_twice.is_empty() { "none" } @else { (v.jobs_twice.join(", ")) } "." }
        }
        @for b in &r.budgets {
            p { (b.service) ": error budget burned " (format!("{:.2}", (b.before - b.after) * 100.0))
                " % of its 30 days (" (format!("{:.2}", b.before * 100.0)) " % left → "
                (format!("{:.2}", b.after * 100.0)) " %)." }
        }
        (table("Timeline", &["at", "what"], html! {
            @for (t, line) in r.timeline() {
                tr { td { (format!("{:+.1}s", t as f64 / 1000.0)) } td { (line) } }
            }
        }))
    };
    let title = format!("Experiment {}", r.name);
    if r.phase.ended() {
        Page::fixed(title, body)
    } else {
        Page::live(title, body)
    }
}
