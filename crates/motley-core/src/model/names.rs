//! What a name and a node label may be.

/// Validates a node label: a key of 1–253 characters and a value of at most 63, neither
/// with whitespace or the selector syntax's `,()=!<>`.
pub fn validate_label(key: &str, value: &str) -> Result<(), String> {
    let bad = |s: &str| {
        s.chars()
            .any(|c| c.is_whitespace() || ",()=!<>".contains(c))
    };
    if key.is_empty() || key.len() > 253 || bad(key) {
        return Err(format!("label key {key:?} is not valid"));
    }
    if value.len() > 63 || bad(value) {
        return Err(format!(
            "label value {value:?} must be at most 63 characters without spaces or ,()=!<>"
        ));
    }
    Ok(())
}

/// Validates a name: 1–63 characters of lowercase letters, digits and `-`,
/// starting with a letter or digit (DNS label rules, as Kubernetes does).
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 63 {
        return Err(format!("name {name:?} must be 1 to 63 characters"));
    }
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !ok_chars || name.starts_with('-') || name.ends_with('-') {
        return Err(format!(
            "name {name:?} must be lowercase letters, digits and '-', not starting or ending with '-'"
        ));
    }
    Ok(())
}
