//! Log lines on stderr: `MOTLEY_LOG` chooses what (tracing-subscriber's `EnvFilter`
//! directives), this module writes each event as one line, in the form of
//! tracing-subscriber's default format without targets:
//! `2026-12-07T00:56:23.123456Z  INFO message key=value`.
//!
//! Why not `tracing_subscriber::fmt()`: its subscriber is built on the `Registry`, which
//! keeps the data of open spans in a slab whose shard table alone is 32 KiB, allocated at
//! start, in every server and agent. motley records no spans of its own, so the spans of
//! its dependencies (entered only at debug and trace levels, inside hyper, h2, tonic) are
//! given an id and otherwise ignored: an event is printed without the spans it is in.

use std::fmt::{self, Write as _};
use std::io::{IsTerminal, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;

/// Installs the logger: `MOTLEY_LOG` if set and valid, else `default` (a level).
pub fn init(default: &str) {
    let filter = EnvFilter::try_from_env("MOTLEY_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let lines = Lines::new(move |event: &Event<'_>| {
        let line = format_line(event, jiff::Timestamp::now(), ansi);
        // One write per line, so that lines of different threads do not interleave; a
        // log that cannot be written is dropped (there is nowhere to say so).
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    });
    let _ = tracing::subscriber::set_global_default(lines.with(filter));
}

/// The subscriber: each event handed to `out` (on stderr, one line: [`init`]).
struct Lines<O> {
    /// Span ids handed out (spans are otherwise ignored).
    next_span: AtomicU64,
    out: O,
}

impl<O> Lines<O> {
    fn new(out: O) -> Lines<O> {
        Lines {
            next_span: AtomicU64::new(1),
            out,
        }
    }
}

impl<O: Fn(&Event<'_>) + Send + Sync + 'static> Subscriber for Lines<O> {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        // The filter layered above decides.
        true
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(self.next_span.fetch_add(1, Ordering::Relaxed).max(1))
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        (self.out)(event);
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

/// The line for `event` at `now`, ending in a newline.
fn format_line(event: &Event<'_>, now: jiff::Timestamp, ansi: bool) -> String {
    let mut line = String::with_capacity(128);
    let _ = write!(line, "{}", now.strftime("%Y-%m-%dT%H:%M:%S%.6fZ"));
    let level = *event.metadata().level();
    let (name, colour) = match level {
        Level::ERROR => ("ERROR", "31"),
        Level::WARN => (" WARN", "33"),
        Level::INFO => (" INFO", "32"),
        Level::DEBUG => ("DEBUG", "34"),
        Level::TRACE => ("TRACE", "35"),
    };
    if ansi {
        let _ = write!(line, " \x1b[{colour}m{name}\x1b[0m ");
    } else {
        let _ = write!(line, " {name} ");
    }
    let mut fields = Fields {
        out: line,
        rest: String::new(),
    };
    let before = fields.out.len();
    event.record(&mut fields);
    let Fields { mut out, rest } = fields;
    // Without a message, the first field follows the level directly.
    out.push_str(if out.len() == before {
        rest.trim_start()
    } else {
        &rest
    });
    out.push('\n');
    out
}

/// Writes an event's fields: the message as it is, then the others as ` name=value`
/// (the message first whatever the order they were given in).
struct Fields {
    out: String,
    rest: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.out.push_str(value);
        } else {
            let _ = write!(self.rest, " {}={value:?}", field.name());
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let _ = write!(self.rest, " {}={value}", field.name());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.out, "{value:?}");
        } else {
            let _ = write!(self.rest, " {}={value:?}", field.name());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// The subscriber `init` installs, with its lines kept in `lines` and a fixed time.
    fn capture(lines: Arc<Mutex<Vec<String>>>) -> Lines<impl Fn(&Event<'_>) + Send + Sync> {
        let at = "2026-12-07T00:56:23.1234567Z"
            .parse::<jiff::Timestamp>()
            .expect("a valid time");
        Lines::new(move |event: &Event<'_>| {
            if let Ok(mut l) = lines.lock() {
                l.push(format_line(event, at, false));
            }
        })
    }

    #[test]
    fn a_line_has_the_time_the_level_the_message_and_the_fields() {
        let lines = Arc::new(Mutex::new(Vec::new()));
        tracing::subscriber::with_default(capture(lines.clone()), || {
            let path = "/var/lib/motley";
            tracing::info!("listening on {}", "127.0.0.1:6443");
            tracing::warn!(node = "pi4", tries = 3, "agent {} lost", "pi4");
            tracing::error!(path, "cannot open");
        });
        let got = lines.lock().map(|l| l.clone()).unwrap_or_default();
        assert_eq!(
            got,
            [
                "2026-12-07T00:56:23.123456Z  INFO listening on 127.0.0.1:6443\n",
                "2026-12-07T00:56:23.123456Z  WARN agent pi4 lost node=\"pi4\" tries=3\n",
                "2026-12-07T00:56:23.123456Z ERROR cannot open path=\"/var/lib/motley\"\n",
            ]
        );
    }

    #[test]
    fn the_filter_decides_what_is_written() {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let filtered = capture(lines.clone()).with(EnvFilter::new("warn"));
        tracing::subscriber::with_default(filtered, || {
            tracing::info!("not this");
            let span = tracing::debug_span!("request", id = 7);
            let _in = span.enter();
            tracing::warn!("this");
        });
        let got = lines.lock().map(|l| l.clone()).unwrap_or_default();
        assert_eq!(got, ["2026-12-07T00:56:23.123456Z  WARN this\n"]);
    }
}
