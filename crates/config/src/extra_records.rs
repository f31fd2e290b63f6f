//! The file named by `dns.extra_records_path`: a JSON list of `{"name", "type", "value"}` records (Headscale's
//! format), read at start and again whenever it changes.

use std::path::{Path, PathBuf};

use crate::decode::records;
use crate::error::FieldError;
use crate::model::DnsRecord;

/// Why an extra-records file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ExtraRecordsError {
    /// The file could not be read.
    #[error("dns.extra_records_path: cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The file holds nothing but white space, which is what a reader sees while the file is being rewritten.
    #[error("dns.extra_records_path: {} is empty", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// The file is not JSON.
    #[error("dns.extra_records_path: {} is not valid JSON: {source}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message; it carries the line and column.
        source: serde_json::Error,
    },
    /// The JSON is not a list of valid A/AAAA records.
    #[error("dns.extra_records_path: {}: {}", path.display(), errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every invalid record field, located as `[index].field`.
        errors: Vec<FieldError>,
    },
}

/// Reads and validates the records in `path`. Keys are matched case-insensitively and unknown keys are ignored,
/// as Go's JSON decoder (and so Headscale) does.
pub fn read_extra_records(path: &Path) -> Result<Vec<DnsRecord>, ExtraRecordsError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| ExtraRecordsError::Read { path: path.to_path_buf(), source })?;
    if text.trim().is_empty() {
        return Err(ExtraRecordsError::Empty { path: path.to_path_buf() });
    }
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|source| ExtraRecordsError::Syntax { path: path.to_path_buf(), source })?;
    let invalid = |errors| ExtraRecordsError::Invalid { path: path.to_path_buf(), errors };
    // The record checks work on the YAML tree the config file is decoded from; every JSON value has one.
    let tree = serde_yaml::to_value(&json)
        .map_err(|e| invalid(vec![FieldError::new("", format!("cannot be read as records: {e}"))]))?;
    records("", &tree, &mut Vec::new()).map_err(invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<Vec<DnsRecord>, ExtraRecordsError> {
        let dir = tempfile_dir();
        let path = dir.join("records.json");
        std::fs::write(&path, text).unwrap();
        let r = read_extra_records(&path);
        std::fs::remove_dir_all(&dir).unwrap();
        r
    }

    fn tempfile_dir() -> PathBuf {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tw-extra-records-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn headscale_format_is_read() {
        let records = read(
            "[\n\t{\"name\": \"grafana.example.com\", \"type\": \"A\", \"value\": \"100.64.0.3\"},\n\t{\"Name\": \"v6.example.com\", \"Type\": \"AAAA\", \"Value\": \"fd7a::3\", \"comment\": \"ignored\"}\n]",
        )
        .unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(
            (records[0].name.as_str(), records[0].record_type(), records[0].value.to_string().as_str()),
            ("grafana.example.com", "A", "100.64.0.3")
        );
        assert_eq!((records[1].name.as_str(), records[1].record_type()), ("v6.example.com", "AAAA"));
        assert!(read("[]").unwrap().is_empty(), "an empty list clears the records");
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        assert!(matches!(read("  \n"), Err(ExtraRecordsError::Empty { .. })));
        let syntax = read("[{\"name\": \"a\",").unwrap_err();
        assert!(matches!(syntax, ExtraRecordsError::Syntax { .. }), "{syntax}");
        assert!(syntax.to_string().starts_with("dns.extra_records_path: "), "{syntax}");
        let err =
            read(r#"[{"name":"a.example","type":"A","value":"::1"},{"name":"b.example","type":"MX","value":"x"}]"#)
                .unwrap_err();
        let ExtraRecordsError::Invalid { errors, .. } = &err else { panic!("{err}") };
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["[0].value", "[1].type"], "{err}");
        let quoted = read(r#"[{"name":"a\"b.example","value":"100.64.0.1"}]"#).unwrap_err();
        assert!(quoted.to_string().contains("[0].name"), "{quoted}");
        assert!(err.to_string().contains("is not an IPv4 address for an A record"), "{err}");
        assert!(matches!(read(r#"{"name":"a"}"#), Err(ExtraRecordsError::Invalid { .. })), "an object is not a list");
        let missing = read_extra_records(Path::new("/nonexistent/records.json")).unwrap_err();
        assert!(matches!(missing, ExtraRecordsError::Read { .. }), "{missing}");
    }
}
