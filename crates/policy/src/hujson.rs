//! HuJSON ("human JSON": JSON with `//` and `/* */` comments and trailing commas) to JSON.
//!
//! The text is first standardized in place — comments become spaces (newlines kept) and a
//! trailing comma before `]` or `}` becomes a space — so byte offsets, lines and columns of the
//! standardized text equal those of the input. The result is then parsed as strict JSON, and
//! every error carries the 1-based line and column where it was found.

use serde_json::Value;

/// What went wrong while reading HuJSON.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HuJsonErrorKind {
    /// A `/*` comment with no closing `*/`.
    UnterminatedComment,
    /// A string with no closing quote.
    UnterminatedString,
    /// A `/` that does not start a comment.
    StraySlash,
    /// The JSON parser rejected the (standardized) text; the text says what it expected.
    Syntax(String),
}

/// A HuJSON error at a position in the input.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {}", describe(.kind))]
pub struct HuJsonError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, counted in characters.
    pub column: usize,
    /// The problem.
    pub kind: HuJsonErrorKind,
}

fn describe(kind: &HuJsonErrorKind) -> String {
    match kind {
        HuJsonErrorKind::UnterminatedComment => "unterminated /* comment, expected */".into(),
        HuJsonErrorKind::UnterminatedString => "unterminated string, expected closing quote".into(),
        HuJsonErrorKind::StraySlash => "unexpected '/', expected // or /* to start a comment".into(),
        HuJsonErrorKind::Syntax(msg) => msg.clone(),
    }
}

fn position(text: &str, byte: usize) -> (usize, usize) {
    let before = &text[..byte.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// Rewrites HuJSON into standard JSON of exactly the same length, keeping every line break.
pub fn standardize(input: &str) -> Result<String, HuJsonError> {
    let bytes = input.as_bytes();
    let mut out: Vec<u8> = bytes.to_vec();
    let err = |at: usize, kind| {
        let (line, column) = position(input, at);
        HuJsonError { line, column, kind }
    };
    // Index (into `out`) of the last significant byte written, to find trailing commas.
    let mut last_sig: Option<usize> = None;
    // The significant byte before `last_sig`: a comma directly after `,`, `[`, `{` or `:` is an
    // error the JSON parser should report, not a trailing comma to drop.
    let mut prev_sig: Option<usize> = None;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                let start = i;
                i += 1;
                loop {
                    match bytes.get(i) {
                        None => return Err(err(start, HuJsonErrorKind::UnterminatedString)),
                        Some(b'\\') => i += 2,
                        Some(b'"') => break,
                        Some(b'\n') => return Err(err(start, HuJsonErrorKind::UnterminatedString)),
                        Some(_) => i += 1,
                    }
                }
                prev_sig = last_sig;
                last_sig = Some(i);
                i += 1;
            }
            b'/' => match bytes.get(i + 1) {
                Some(b'/') => {
                    while i < bytes.len() && bytes[i] != b'\n' {
                        out[i] = b' ';
                        i += 1;
                    }
                }
                Some(b'*') => {
                    let start = i;
                    out[i] = b' ';
                    out[i + 1] = b' ';
                    i += 2;
                    loop {
                        if i + 1 >= bytes.len() {
                            return Err(err(start, HuJsonErrorKind::UnterminatedComment));
                        }
                        if bytes[i] == b'*' && bytes[i + 1] == b'/' {
                            out[i] = b' ';
                            out[i + 1] = b' ';
                            i += 2;
                            break;
                        }
                        if bytes[i] != b'\n' && bytes[i] != b'\r' {
                            out[i] = b' ';
                        }
                        i += 1;
                    }
                }
                _ => return Err(err(i, HuJsonErrorKind::StraySlash)),
            },
            b']' | b'}' => {
                if let Some(at) = last_sig
                    && out[at] == b','
                    && prev_sig.is_some_and(|p| !matches!(out[p], b',' | b'[' | b'{' | b':'))
                {
                    out[at] = b' ';
                }
                prev_sig = last_sig;
                last_sig = Some(i);
                i += 1;
            }
            b' ' | b'\t' | b'\n' | b'\r' => i += 1,
            _ => {
                prev_sig = last_sig;
                last_sig = Some(i);
                i += 1;
            }
        }
    }
    // Only ASCII bytes were replaced by ASCII spaces, and multi-byte sequences live inside strings
    // or comments (comments are blanked byte by byte), so the result is valid UTF-8; fall back to
    // a lossy conversion rather than panic if that reasoning were ever wrong.
    Ok(String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

/// Parses HuJSON text into a JSON value.
pub fn parse(input: &str) -> Result<Value, HuJsonError> {
    let standard = standardize(input)?;
    serde_json::from_str(&standard).map_err(|e| {
        let msg = e.to_string();
        // serde_json appends " at line L column C"; keep only the description.
        let msg = match msg.rfind(" at line ") {
            Some(at) => msg[..at].to_string(),
            None => msg,
        };
        HuJsonError { line: e.line().max(1), column: e.column().max(1), kind: HuJsonErrorKind::Syntax(msg) }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn accepts_hujson() {
        let cases: &[(&str, Value)] = &[
            ("{}", json!({})),
            ("// c\n{\"a\": 1, // x\n}", json!({"a": 1})),
            ("{\"a\": [1, 2, /* three */ 3,],}", json!({"a": [1, 2, 3]})),
            ("{\"u\": \"http://x/*y*/\"}", json!({"u": "http://x/*y*/"})),
            ("{\"q\": \"a\\\"//b\",}", json!({"q": "a\"//b"})),
            ("[1,\n// trailing comment\n]", json!([1])),
            ("{\"é\": \"ü\" /* ünïcode */}", json!({"é": "ü"})),
        ];
        for (input, want) in cases {
            assert_eq!(&parse(input).unwrap(), want, "input {input:?}");
        }
    }

    #[test]
    fn rejects_with_position() {
        let cases: &[(&str, usize, usize, &str)] = &[
            ("{\n  \"a\": 1\n  \"b\": 2\n}", 3, 3, "expected `,` or `}`"),
            ("{\"a\": /* open", 1, 7, "unterminated /* comment"),
            ("{\"a\": \"x}", 1, 7, "unterminated string"),
            ("{\"a\": 1 / 2}", 1, 9, "unexpected '/'"),
            ("[1,,]", 1, 4, "expected value"),
            ("", 1, 1, "EOF"),
        ];
        for (input, line, column, msg) in cases {
            let e = parse(input).unwrap_err();
            assert_eq!((e.line, e.column), (*line, *column), "input {input:?}: {e}");
            assert!(e.to_string().contains(msg), "input {input:?}: {e}");
        }
    }
}
