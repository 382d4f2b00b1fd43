//! Label selectors in Kubernetes' set-based syntax, extended with numeric
//! comparisons for facts.
//!
//! ```text
//! arch in (amd64, arm64), !gpu, zone=attic, cpu.score > 1500, tier notin (test)
//! ```
//!
//! Requirements separated by commas must all hold. Keys are looked up through
//! a [`Labels`] implementation, so facts and user labels can both be matched.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

/// A parsed selector: all requirements must match.
#[derive(Debug, Clone, PartialEq)]
pub struct Selector {
    reqs: Vec<Requirement>,
}

/// One requirement of a selector.
#[derive(Debug, Clone, PartialEq)]
pub enum Requirement {
    /// `key` — the key exists.
    Exists(String),
    /// `!key` — the key does not exist.
    NotExists(String),
    /// `key = v`, `key == v`.
    Eq(String, String),
    /// `key != v` (also true when the key is absent).
    NotEq(String, String),
    /// `key in (a, b)`.
    In(String, Vec<String>),
    /// `key notin (a, b)` (also true when the key is absent).
    NotIn(String, Vec<String>),
    /// `key > n`, `key >= n`, `key < n`, `key <= n`; the key's value must be a number.
    Cmp(String, CmpOp, f64),
}

/// A numeric comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl CmpOp {
    /// `<`, `<=`, `>` or `>=`.
    pub fn as_str(self) -> &'static str {
        match self {
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }
}

/// A syntax error in a selector, with the character offset where it was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid selector at character {offset}: {message}")]
pub struct SelectorError {
    /// 0-based character offset into the selector text.
    pub offset: usize,
    /// What was wrong.
    pub message: String,
}

/// Something that has labels a selector can match.
pub trait Labels {
    /// The value of `key`, if present.
    fn get(&self, key: &str) -> Option<Cow<'_, str>>;
}

impl Labels for BTreeMap<String, String> {
    fn get(&self, key: &str) -> Option<Cow<'_, str>> {
        BTreeMap::get(self, key).map(|v| Cow::Borrowed(v.as_str()))
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Op(&'static str),
    LParen,
    RParen,
    Comma,
    Bang,
}

fn is_word(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | ':')
}

fn lex(s: &str) -> Result<Vec<(usize, Tok)>, SelectorError> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        let two: String = chars[i..chars.len().min(i + 2)].iter().collect();
        let tok = match c {
            ' ' | '\t' | '\n' | '\r' => {
                i += 1;
                continue;
            }
            '(' => Tok::LParen,
            ')' => Tok::RParen,
            ',' => Tok::Comma,
            _ if two == "==" || two == "!=" || two == "<=" || two == ">=" => {
                i += 1;
                Tok::Op(match two.as_str() {
                    "==" => "=",
                    "!=" => "!=",
                    "<=" => "<=",
                    _ => ">=",
                })
            }
            '!' => Tok::Bang,
            '=' => Tok::Op("="),
            '<' => Tok::Op("<"),
            '>' => Tok::Op(">"),
            _ if is_word(c) => {
                while i + 1 < chars.len() && is_word(chars[i + 1]) {
                    i += 1;
                }
                Tok::Word(chars[start..=i].iter().collect())
            }
            _ => {
                return Err(SelectorError {
                    offset: i,
                    message: format!("unexpected character {c:?}"),
                });
            }
        };
        out.push((start, tok));
        i += 1;
    }
    Ok(out)
}

struct Parser {
    toks: Vec<(usize, Tok)>,
    pos: usize,
    len: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|(_, t)| t)
    }
    fn offset(&self) -> usize {
        self.toks.get(self.pos).map(|(o, _)| *o).unwrap_or(self.len)
    }
    fn fail<T>(&self, message: impl Into<String>) -> Result<T, SelectorError> {
        Err(SelectorError {
            offset: self.offset(),
            message: message.into(),
        })
    }
    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).map(|(_, t)| t.clone());
        self.pos += 1;
        t
    }
    fn word(&mut self, what: &str) -> Result<String, SelectorError> {
        match self.peek() {
            Some(Tok::Word(w)) => {
                let w = w.clone();
                self.pos += 1;
                Ok(w)
            }
            _ => self.fail(format!("expected {what}")),
        }
    }
    fn values(&mut self) -> Result<Vec<String>, SelectorError> {
        if self.next() != Some(Tok::LParen) {
            self.pos -= 1;
            return self.fail("expected '(' after in/notin");
        }
        let mut vals = Vec::new();
        loop {
            vals.push(self.word("a value")?);
            match self.next() {
                Some(Tok::Comma) => continue,
                Some(Tok::RParen) => break,
                _ => {
                    self.pos -= 1;
                    return self.fail("expected ',' or ')'");
                }
            }
        }
        Ok(vals)
    }
    fn requirement(&mut self) -> Result<Requirement, SelectorError> {
        if self.peek() == Some(&Tok::Bang) {
            self.pos += 1;
            return Ok(Requirement::NotExists(self.word("a key after '!'")?));
        }
        let key = self.word("a key")?;
        match self.peek().cloned() {
            None | Some(Tok::Comma) => Ok(Requirement::Exists(key)),
            Some(Tok::Word(w)) if w == "in" => {
                self.pos += 1;
                Ok(Requirement::In(key, self.values()?))
            }
            Some(Tok::Word(w)) if w == "notin" => {
                self.pos += 1;
                Ok(Requirement::NotIn(key, self.values()?))
            }
            Some(Tok::Op(op)) => {
                self.pos += 1;
                let at = self.offset();
                let value = self.word("a value")?;
                let num = |v: &str| -> Result<f64, SelectorError> {
                    v.parse::<f64>()
                        .ok()
                        .filter(|f| f.is_finite())
                        .ok_or(SelectorError {
                            offset: at,
                            message: format!("{op} needs a number, got {v:?}"),
                        })
                };
                Ok(match op {
                    "=" => Requirement::Eq(key, value),
                    "!=" => Requirement::NotEq(key, value),
                    "<" => Requirement::Cmp(key, CmpOp::Lt, num(&value)?),
                    "<=" => Requirement::Cmp(key, CmpOp::Le, num(&value)?),
                    ">" => Requirement::Cmp(key, CmpOp::Gt, num(&value)?),
                    _ => Requirement::Cmp(key, CmpOp::Ge, num(&value)?),
                })
            }
            _ => self.fail("expected an operator (=, !=, in, notin, <, >, <=, >=) or ','"),
        }
    }
}

impl Selector {
    /// Parses a selector. An empty string matches everything.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let toks = lex(s)?;
        let mut p = Parser {
            toks,
            pos: 0,
            len: s.chars().count(),
        };
        let mut reqs = Vec::new();
        if p.peek().is_none() {
            return Ok(Selector { reqs });
        }
        loop {
            reqs.push(p.requirement()?);
            match p.next() {
                None => break,
                Some(Tok::Comma) => continue,
                Some(_) => {
                    p.pos -= 1;
                    return p.fail("expected ',' between requirements");
                }
            }
        }
        Ok(Selector { reqs })
    }

    /// The requirements, in order.
    pub fn requirements(&self) -> &[Requirement] {
        &self.reqs
    }

    /// True when every requirement holds for `labels`.
    pub fn matches(&self, labels: &dyn Labels) -> bool {
        self.first_mismatch(labels).is_none()
    }

    /// The first requirement that does not hold, for explanations.
    pub fn first_mismatch(&self, labels: &dyn Labels) -> Option<&Requirement> {
        self.reqs.iter().find(|r| !r.matches(labels))
    }
}

impl Requirement {
    /// True when this requirement holds for `labels`.
    pub fn matches(&self, labels: &dyn Labels) -> bool {
        match self {
            Requirement::Exists(k) => labels.get(k).is_some(),
            Requirement::NotExists(k) => labels.get(k).is_none(),
            Requirement::Eq(k, v) => labels.get(k).as_deref() == Some(v.as_str()),
            Requirement::NotEq(k, v) => labels.get(k).as_deref() != Some(v.as_str()),
            Requirement::In(k, vs) => labels.get(k).is_some_and(|x| vs.iter().any(|v| *v == *x)),
            Requirement::NotIn(k, vs) => {
                !labels.get(k).is_some_and(|x| vs.iter().any(|v| *v == *x))
            }
            Requirement::Cmp(k, op, n) => labels
                .get(k)
                .and_then(|x| x.parse::<f64>().ok())
                .is_some_and(|x| match op {
                    CmpOp::Lt => x < *n,
                    CmpOp::Le => x <= *n,
                    CmpOp::Gt => x > *n,
                    CmpOp::Ge => x >= *n,
                }),
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Requirement::Exists(k) => write!(f, "{k}"),
            Requirement::NotExists(k) => write!(f, "!{k}"),
            Requirement::Eq(k, v) => write!(f, "{k}={v}"),
            Requirement::NotEq(k, v) => write!(f, "{k}!={v}"),
            Requirement::In(k, vs) => write!(f, "{k} in ({})", vs.join(",")),
            Requirement::NotIn(k, vs) => write!(f, "{k} notin ({})", vs.join(",")),
            Requirement::Cmp(k, op, n) => write!(f, "{k} {} {n}", op.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn set_based_and_numeric() {
        let l = labels(&[("arch", "arm64"), ("cpu.score", "1800"), ("zone", "attic")]);
        let yes = [
            "",
            "arch in (amd64, arm64)",
            "!gpu",
            "zone",
            "zone=attic",
            "zone == attic",
            "zone != cellar",
            "gpu != x",
            "cpu.score > 1500",
            "cpu.score >= 1800, arch notin (riscv64)",
        ];
        for s in yes {
            assert!(Selector::parse(s).unwrap().matches(&l), "{s}");
        }
        let no = [
            "arch in (amd64)",
            "gpu",
            "!zone",
            "cpu.score < 1000",
            "arch notin (arm64)",
            "model > 3",
        ];
        for s in no {
            assert!(!Selector::parse(s).unwrap().matches(&l), "{s}");
        }
    }

    #[test]
    fn errors_name_the_offset() {
        let e = Selector::parse("arch in amd64").unwrap_err();
        assert_eq!(e.offset, 8);
        let e = Selector::parse("cpu.score > fast").unwrap_err();
        assert!(e.message.contains("number"), "{e}");
        assert!(Selector::parse("arch in (a,").is_err());
        assert!(Selector::parse("a b").is_err());
        assert!(Selector::parse("a = $").is_err());
        assert!(Selector::parse(",").is_err());
    }

    proptest! {
        #[test]
        fn never_panics(s in ".{0,40}") {
            let _ = Selector::parse(&s);
        }
    }
}
