//! JSON documents given on the command line (key policies): inline text, a file, or
//! standard input, always a single JSON object of bounded size.
//!
//! The rule: an argument whose first non-blank character is `{` is inline JSON; `-` is
//! standard input; anything else is a file path. A path is never guessed to be JSON, so
//! a typo in a file name is reported as a missing file, not as bad JSON.

use std::io::Read as _;
use std::path::Path;

use serde_json::Value;

use crate::Error;

/// Largest policy document the CLI reads, in bytes (the parent's default body limit is
/// 256 KiB for the whole request).
pub const MAX_JSON_INPUT: usize = 128 * 1024;

/// Loads a JSON object from `arg` (inline, `-` for stdin, or a file path).
///
/// # Errors
/// [`Error::Usage`] for a missing or unreadable file, input over [`MAX_JSON_INPUT`]
/// bytes, text that is not JSON, or JSON that is not an object.
pub fn load_json_object(arg: &str) -> Result<Value, Error> {
    let (text, source) = if arg.trim_start().starts_with('{') {
        (arg.to_owned(), "inline JSON".to_owned())
    } else if arg == "-" {
        (read_bounded(std::io::stdin().lock())?, "stdin".to_owned())
    } else {
        let path = Path::new(arg);
        let file = std::fs::File::open(path)
            .map_err(|e| Error::Usage(format!("cannot open {}: {e}", path.display())))?;
        (read_bounded(file)?, path.display().to_string())
    };
    parse_object(&text, &source)
}

/// Reads at most [`MAX_JSON_INPUT`] bytes of UTF-8.
fn read_bounded(reader: impl std::io::Read) -> Result<String, Error> {
    let mut text = String::new();
    let limit = u64::try_from(MAX_JSON_INPUT + 1).unwrap_or(u64::MAX);
    reader
        .take(limit)
        .read_to_string(&mut text)
        .map_err(|e| Error::Usage(format!("cannot read JSON input: {e}")))?;
    Ok(text)
}

fn parse_object(text: &str, source: &str) -> Result<Value, Error> {
    if text.len() > MAX_JSON_INPUT {
        return Err(Error::Usage(format!(
            "{source}: more than {MAX_JSON_INPUT} bytes"
        )));
    }
    let value: Value = serde_json::from_str(text)
        .map_err(|e| Error::Usage(format!("{source}: not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(Error::Usage(format!("{source}: expected a JSON object")));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn loads_inline_json() {
        let v = load_json_object(r#" {"enabled": true, "chain_ids": [1]}"#).unwrap();
        assert_eq!(v, json!({"enabled": true, "chain_ids": [1]}));
    }

    #[test]
    fn loads_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.json");
        std::fs::write(&path, "{\n  \"enabled\": false\n}\n").unwrap();
        let v = load_json_object(path.to_str().unwrap()).unwrap();
        assert_eq!(v, json!({"enabled": false}));
    }

    #[test]
    fn rejects_inline_json_that_is_broken() {
        let err = load_json_object(r#"{"enabled": tru"#).unwrap_err();
        assert!(
            matches!(&err, Error::Usage(m) if m.contains("inline JSON")),
            "{err}"
        );
    }

    #[test]
    fn rejects_a_missing_file() {
        let err = load_json_object("/nonexistent/ekms/policy.json").unwrap_err();
        assert!(
            matches!(&err, Error::Usage(m) if m.contains("cannot open")),
            "{err}"
        );
    }

    #[test]
    fn rejects_json_that_is_not_an_object() {
        let dir = tempfile::tempdir().unwrap();
        for (i, text) in ["[1, 2]", "\"x\"", "null", "42"].iter().enumerate() {
            let path = dir.path().join(format!("p{i}.json"));
            std::fs::write(&path, text).unwrap();
            let err = load_json_object(path.to_str().unwrap()).unwrap_err();
            assert!(
                matches!(&err, Error::Usage(m) if m.contains("object")),
                "{text}: {err}"
            );
        }
    }

    #[test]
    fn rejects_oversized_input() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.json");
        let big = format!("{{\"pad\": \"{}\"}}", "a".repeat(MAX_JSON_INPUT));
        std::fs::write(&path, &big).unwrap();
        let err = load_json_object(path.to_str().unwrap()).unwrap_err();
        assert!(
            matches!(&err, Error::Usage(m) if m.contains("more than")),
            "{err}"
        );
        assert!(load_json_object(&big).is_err());
    }

    #[test]
    fn rejects_trailing_garbage_and_non_utf8() {
        assert!(load_json_object(r#"{"a":1} {"b":2}"#).is_err());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bin.json");
        std::fs::write(&path, [b'{', 0xff, b'}']).unwrap();
        assert!(load_json_object(path.to_str().unwrap()).is_err());
    }
}
