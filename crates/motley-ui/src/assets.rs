//! Static files embedded in the binary: nothing is fetched from elsewhere, and the
//! dashboard works offline. Their URLs carry the version, so browsers may keep them.

/// htmx 2.0.11 (Zero-Clause BSD, `assets/htmx-LICENSE`), from the npm package
/// `htmx.org`'s `dist/htmx.min.js` (docs/decisions.md "The dashboard").
pub const HTMX: &str = include_str!("../assets/htmx.min.js");
/// The stylesheet: light and dark by the system's preference.
pub const CSS: &str = include_str!("../assets/motley.css");
/// Follows an allocation's log over server-sent events.
pub const JS: &str = include_str!("../assets/motley.js");

/// Every file's name.
pub const NAMES: [&str; 3] = ["htmx.min.js", "motley.css", "motley.js"];

/// A file by name: (content type, body).
pub fn get(name: &str) -> Option<(&'static str, &'static str)> {
    match name {
        "htmx.min.js" => Some(("text/javascript; charset=utf-8", HTMX)),
        "motley.css" => Some(("text/css; charset=utf-8", CSS)),
        "motley.js" => Some(("text/javascript; charset=utf-8", JS)),
        _ => None,
    }
}

/// Where a page links a file: versioned, so a new release is fetched anew.
pub fn href(name: &str) -> String {
    format!("/ui/assets/{}/{name}", env!("CARGO_PKG_VERSION"))
}
