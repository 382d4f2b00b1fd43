//! Prometheus text formats: the metrics crate writes OpenMetrics; scrapers that do
//! not ask for it, and `promtool check metrics`, read the classic format (0.0.4).

/// Converts OpenMetrics text to the classic Prometheus text format (0.0.4): counter
/// families take their samples' `_total` name, and `# EOF` / `# UNIT` lines go.
pub fn openmetrics_to_prometheus(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut pending_help: Option<&str> = None;
    for line in text.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if line.starts_with("# HELP ") {
            if let Some(h) = pending_help.take() {
                out.push_str(h);
                out.push('\n');
            }
            pending_help = Some(line);
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.splitn(2, ' ');
            let (name, kind) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let total = kind == "counter" && !name.ends_with("_total");
            if let Some(h) = pending_help.take() {
                if total {
                    out.push_str(&h.replacen(
                        &format!("# HELP {name} "),
                        &format!("# HELP {name}_total "),
                        1,
                    ));
                } else {
                    out.push_str(h);
                }
                out.push('\n');
            }
            if total {
                out.push_str(&format!("# TYPE {name}_total counter\n"));
            } else {
                out.push_str(line);
                out.push('\n');
            }
            continue;
        }
        if let Some(h) = pending_help.take() {
            out.push_str(h);
            out.push('\n');
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn counters_take_their_total_name() {
        let om = "# HELP x_requests Requests.\n# TYPE x_requests counter\nx_requests_total 3\n# HELP g A gauge.\n# TYPE g gauge\ng 1\n# EOF\n";
        assert_eq!(
            super::openmetrics_to_prometheus(om),
            "# HELP x_requests_total Requests.\n# TYPE x_requests_total counter\nx_requests_total 3\n# HELP g A gauge.\n# TYPE g gauge\ng 1\n"
        );
    }
}
