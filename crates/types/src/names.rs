//! Validated names: ACL tags and DNS labels.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// A tag must be `tag:` followed by a letter and then letters, digits or dashes.
    #[error("invalid tag {tag:?}: must be \"tag:\" followed by a letter, then letters, digits or '-'")]
    InvalidTag {
        /// The rejected input.
        tag: String,
    },
}

/// An ACL tag such as `tag:prod`, validated by the same rule Tailscale applies (`tailcfg.CheckTag`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Tag(String);

impl Tag {
    /// Parses and validates a tag.
    pub fn parse(s: &str) -> Result<Tag, NameError> {
        let invalid = || NameError::InvalidTag { tag: s.to_string() };
        let name = s.strip_prefix("tag:").ok_or_else(invalid)?;
        let mut chars = name.chars();
        match chars.next() {
            Some(c) if c.is_ascii_alphabetic() => {}
            _ => return Err(invalid()),
        }
        if !chars.all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(invalid());
        }
        Ok(Tag(s.to_string()))
    }

    /// The full tag text, including the `tag:` prefix.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Tag {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Tag::parse(&s)
    }
}

impl From<Tag> for String {
    fn from(t: Tag) -> String {
        t.0
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A single DNS label (`[a-z0-9-]`, 1–63 chars, no leading/trailing dash): the form of a node's given name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DnsLabel(String);

impl DnsLabel {
    /// Maximum length of one DNS label.
    pub const MAX_LEN: usize = 63;

    /// Turns an arbitrary host name into a DNS-safe label: lower-cases it, maps every run of other characters to a
    /// single `-`, trims dashes and truncates to 63 characters. Returns `None` when nothing usable remains.
    pub fn sanitize(raw: &str) -> Option<DnsLabel> {
        let mut out = String::with_capacity(raw.len().min(Self::MAX_LEN));
        let mut pending_dash = false;
        for c in raw.chars() {
            if c.is_ascii_alphanumeric() {
                if pending_dash && !out.is_empty() {
                    out.push('-');
                }
                pending_dash = false;
                out.push(c.to_ascii_lowercase());
            } else {
                pending_dash = true;
            }
            if out.len() >= Self::MAX_LEN {
                break;
            }
        }
        out.truncate(Self::MAX_LEN);
        let trimmed = out.trim_end_matches('-');
        (!trimmed.is_empty()).then(|| DnsLabel(trimmed.to_string()))
    }

    /// Accepts `s` only if it already is a valid label.
    pub fn parse(s: &str) -> Option<DnsLabel> {
        let ok = !s.is_empty()
            && s.len() <= Self::MAX_LEN
            && !s.starts_with('-')
            && !s.ends_with('-')
            && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        ok.then(|| DnsLabel(s.to_string()))
    }

    /// Returns `self` with `-<n>` appended, truncating the base so the result stays a valid label.
    pub fn with_suffix(&self, n: u32) -> DnsLabel {
        let suffix = format!("-{n}");
        let keep = Self::MAX_LEN.saturating_sub(suffix.len()).min(self.0.len());
        let base = self.0[..keep].trim_end_matches('-');
        DnsLabel(format!("{base}{suffix}"))
    }

    /// The label text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DnsLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_follow_tailscale_rule() {
        for ok in ["tag:a", "tag:prod", "tag:web-1", "tag:A9"] {
            assert!(Tag::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "tag:", "prod", "tag:1a", "tag:-a", "tag:a_b", "tag:a b", "Tag:a"] {
            assert!(Tag::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sanitize_makes_dns_safe_labels() {
        let cases = [
            ("My Laptop", Some("my-laptop")),
            ("host.example.com", Some("host-example-com")),
            ("--a__b--", Some("a-b")),
            ("ÄÖÜ", None),
            ("", None),
            ("UPPER", Some("upper")),
        ];
        for (raw, want) in cases {
            assert_eq!(DnsLabel::sanitize(raw).as_ref().map(DnsLabel::as_str), want, "{raw:?}");
        }
        let long = "x".repeat(100);
        assert_eq!(DnsLabel::sanitize(&long).unwrap().as_str().len(), 63);
    }

    #[test]
    fn suffix_keeps_label_valid() {
        let base = DnsLabel::sanitize(&"y".repeat(63)).unwrap();
        let s = base.with_suffix(12);
        assert!(s.as_str().len() <= 63);
        assert!(s.as_str().ends_with("-12"));
        assert!(DnsLabel::parse(s.as_str()).is_some());
    }
}
