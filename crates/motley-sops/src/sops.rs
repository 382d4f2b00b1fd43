//! SOPS files whose data key is encrypted to age recipients (`sops --age`).
//!
//! The format, as SOPS writes it: every leaf value is replaced by
//! `ENC[AES256_GCM,data:…,iv:…,tag:…,type:…]`, AES-256-GCM under the file's 32-byte
//! data key with a 32-byte IV, its additional data the path of map keys leading to it,
//! each followed by `:` (`data:password:`; list items share their list's path). The
//! `sops:` map carries the data key age-encrypted per recipient (`age: [{recipient,
//! enc}]`), `lastmodified`, and `mac`: the SHA-512 of every value's plaintext in file
//! order (values under a key ending in `unencrypted_suffix` too), upper-case hex,
//! encrypted with `lastmodified` as additional data. A file whose MAC does not match
//! was changed without the key, and is refused.

use std::fmt::Write as _;

use aes_gcm::aead::consts::U32;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::aes::Aes256;
use base64::Engine as _;
use sha2::Digest as _;
use zeroize::Zeroizing;

use crate::{DecryptError, Identities, decrypt_age};

type Cipher = aes_gcm::AesGcm<Aes256, U32>;

/// A YAML node with its map order kept (the MAC is over values in file order).
#[derive(Debug, Clone, PartialEq)]
enum Node {
    Map(Vec<(String, Node)>),
    Seq(Vec<Node>),
    Str(String),
    /// A number, boolean or null as written (`5432`, `0.5`, `true`, `null`).
    Plain(String),
}

impl<'de> serde::Deserialize<'de> for Node {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Node, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Node;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("YAML")
            }
            fn visit_str<E>(self, v: &str) -> Result<Node, E> {
                Ok(Node::Str(v.to_string()))
            }
            fn visit_string<E>(self, v: String) -> Result<Node, E> {
                Ok(Node::Str(v))
            }
            fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
                Ok(Node::Plain(v.to_string()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
                Ok(Node::Plain(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
                Ok(Node::Plain(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
                Ok(Node::Plain(v.to_string()))
            }
            fn visit_unit<E>(self) -> Result<Node, E> {
                Ok(Node::Plain("null".into()))
            }
            fn visit_none<E>(self) -> Result<Node, E> {
                Ok(Node::Plain("null".into()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Node, A::Error> {
                let mut out = Vec::new();
                while let Some(n) = a.next_element()? {
                    out.push(n);
                }
                Ok(Node::Seq(out))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Node, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = a.next_entry::<String, Node>()? {
                    out.push((k, v));
                }
                Ok(Node::Map(out))
            }
        }
        d.deserialize_any(V)
    }
}

impl Node {
    fn get(&self, key: &str) -> Option<&Node> {
        match self {
            Node::Map(m) => m.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    fn str(&self) -> Option<&str> {
        match self {
            Node::Str(s) | Node::Plain(s) => Some(s),
            _ => None,
        }
    }

    /// The node as flow YAML (JSON's syntax, which YAML reads).
    fn emit(&self, out: &mut String) {
        match self {
            Node::Map(m) => {
                out.push('{');
                for (i, (k, v)) in m.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    quote(k, out);
                    out.push_str(": ");
                    v.emit(out);
                }
                out.push('}');
            }
            Node::Seq(s) => {
                out.push('[');
                for (i, v) in s.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    v.emit(out);
                }
                out.push(']');
            }
            Node::Str(s) => quote(s, out),
            Node::Plain(p) => out.push_str(p),
        }
    }
}

fn quote(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// One `ENC[AES256_GCM,…]` value's parts.
struct Sealed {
    data: Vec<u8>,
    iv: Vec<u8>,
    tag: Vec<u8>,
    kind: String,
}

fn parse_sealed(v: &str) -> Option<Result<Sealed, String>> {
    let inner = v.strip_prefix("ENC[AES256_GCM,")?.strip_suffix(']')?;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.decode(s);
    let mut parts = std::collections::BTreeMap::new();
    for p in inner.split(',') {
        let Some((k, v)) = p.split_once(':') else {
            return Some(Err(format!("a malformed ENC value ({p:?})")));
        };
        parts.insert(k, v);
    }
    let get = |k: &str| parts.get(k).copied().unwrap_or("");
    Some((|| {
        Ok(Sealed {
            data: b64(get("data")).map_err(|e| format!("its data: {e}"))?,
            iv: b64(get("iv")).map_err(|e| format!("its iv: {e}"))?,
            tag: b64(get("tag")).map_err(|e| format!("its tag: {e}"))?,
            kind: get("type").to_string(),
        })
    })())
}

fn open(key: &[u8; 32], s: &Sealed, aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, String> {
    if s.iv.len() != 32 || s.tag.len() != 16 {
        return Err(format!(
            "an IV of {} bytes and a tag of {} (SOPS writes 32 and 16)",
            s.iv.len(),
            s.tag.len()
        ));
    }
    let cipher = Cipher::new(key.into());
    let mut msg = s.data.clone();
    msg.extend_from_slice(&s.tag);
    cipher
        .decrypt(
            aes_gcm::Nonce::<U32>::from_slice(&s.iv),
            Payload { msg: &msg, aad },
        )
        .map(Zeroizing::new)
        .map_err(|_| {
            "does not open with the file's data key (changed, or moved to another key)".into()
        })
}

struct Walk<'a> {
    key: &'a [u8; 32],
    suffix: &'a str,
    digest: sha2::Sha512,
}

impl Walk<'_> {
    fn node(&mut self, n: &Node, aad: &str, clear: bool) -> Result<Node, (String, String)> {
        match n {
            Node::Map(m) => {
                let mut out = Vec::with_capacity(m.len());
                for (k, v) in m {
                    let path = format!("{aad}{k}:");
                    let clear = clear || (!self.suffix.is_empty() && k.ends_with(self.suffix));
                    out.push((k.clone(), self.node(v, &path, clear)?));
                }
                Ok(Node::Map(out))
            }
            Node::Seq(s) => s
                .iter()
                .map(|v| self.node(v, aad, clear))
                .collect::<Result<_, _>>()
                .map(Node::Seq),
            Node::Str(v) | Node::Plain(v) => {
                let sealed = if clear { None } else { parse_sealed(v) };
                let Some(sealed) = sealed else {
                    // In the clear (a suffixed key, or never encrypted): hashed as SOPS
                    // writes such values (`True`/`False` for booleans).
                    let bytes = match (n, v.as_str()) {
                        (Node::Plain(_), "true") => "True",
                        (Node::Plain(_), "false") => "False",
                        _ => v.as_str(),
                    };
                    self.digest.update(bytes.as_bytes());
                    return Ok(n.clone());
                };
                let at = aad.trim_end_matches(':').replace(':', ".");
                let sealed = sealed.map_err(|e| (at.clone(), e))?;
                let plain = open(self.key, &sealed, aad.as_bytes()).map_err(|e| (at.clone(), e))?;
                self.digest.update(plain.as_slice());
                let text = String::from_utf8(plain.to_vec())
                    .map_err(|_| (at.clone(), "not UTF-8".to_string()))?;
                Ok(match sealed.kind.as_str() {
                    "int" | "float" => Node::Plain(text),
                    "bool" => Node::Plain(text.to_ascii_lowercase()),
                    "str" | "" => Node::Str(text),
                    other => {
                        return Err((
                            at,
                            format!("a value of type {other:?}, which manifests cannot hold"),
                        ));
                    }
                })
            }
        }
    }
}

/// Decrypts the SOPS YAML file `text` named `file` with the age identities `ids`;
/// returns the document without its `sops:` map, as flow YAML. The data key opens
/// only from an age recipient's entry; the MAC must match.
pub fn decrypt_sops_yaml(
    ids: &Identities,
    file: &str,
    text: &str,
) -> Result<Zeroizing<String>, DecryptError> {
    let err = |why: String| DecryptError::File {
        file: file.to_string(),
        why,
    };
    let doc: Node = serde_saphyr::from_str(text).map_err(|e| err(format!("not YAML: {e}")))?;
    let Node::Map(top) = &doc else {
        return Err(err("not a map at the top".into()));
    };
    let meta = doc
        .get("sops")
        .ok_or_else(|| err("no sops: metadata (not a SOPS file)".into()))?;
    let recipients = match meta.get("age") {
        Some(Node::Seq(r)) if !r.is_empty() => r,
        _ => {
            return Err(err(
                "no age recipient in sops: (encrypt with sops --age)".into()
            ));
        }
    };
    let mut key = None;
    let mut tried = Vec::new();
    for r in recipients {
        let (Some(recipient), Some(enc)) = (
            r.get("recipient").and_then(Node::str),
            r.get("enc").and_then(Node::str),
        ) else {
            continue;
        };
        tried.push(recipient.to_string());
        if let Ok(k) = decrypt_age(ids, file, enc.as_bytes(), 64)
            && let Ok(k) = <[u8; 32]>::try_from(k.as_slice())
        {
            key = Some(Zeroizing::new(k));
            break;
        }
    }
    let key = key.ok_or_else(|| {
        err(format!(
            "the cluster's age identity is none of the file's recipients ({})",
            tried.join(", ")
        ))
    })?;
    let suffix = meta
        .get("unencrypted_suffix")
        .and_then(Node::str)
        .unwrap_or("_unencrypted");
    let mut walk = Walk {
        key: &key,
        suffix,
        digest: sha2::Sha512::new(),
    };
    let mut out = Vec::new();
    for (k, v) in top.iter().filter(|(k, _)| k != "sops") {
        let clear = !suffix.is_empty() && k.ends_with(suffix);
        let n = walk
            .node(v, &format!("{k}:"), clear)
            .map_err(|(at, why)| err(format!("{at}: {why}")))?;
        out.push((k.clone(), n));
    }
    let lastmodified = meta
        .get("lastmodified")
        .and_then(Node::str)
        .ok_or_else(|| err("sops: has no lastmodified".into()))?;
    let mac = meta
        .get("mac")
        .and_then(Node::str)
        .and_then(parse_sealed)
        .ok_or_else(|| err("sops: has no mac: it cannot be checked, and is refused".into()))?
        .map_err(|e| err(format!("sops.mac: {e}")))?;
    let want =
        open(&key, &mac, lastmodified.as_bytes()).map_err(|e| err(format!("sops.mac: {e}")))?;
    let got = hex::encode_upper(walk.digest.finalize());
    if want.as_slice() != got.as_bytes() {
        return Err(err(
            "its MAC does not match its values: changed without the key, refused".into(),
        ));
    }
    let mut yaml = Zeroizing::new(String::new());
    Node::Map(out).emit(&mut yaml);
    yaml.push('\n');
    Ok(yaml)
}
