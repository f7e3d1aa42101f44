//! Every JSON example in docs/POLICY.md parses as a new policy (`Policy::parse_new`)
//! and validates against docs/policy.schema.json; canonical forms validate too; and
//! documents the parser refuses for reasons the schema can express, the schema refuses.
#![allow(missing_docs, clippy::unwrap_used)]

use std::path::Path;

use ekms_signer::{Policy, Rule};

fn docs() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs")
}

fn schema() -> jsonschema::Validator {
    let text = std::fs::read_to_string(docs().join("policy.schema.json")).unwrap();
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    jsonschema::validator_for(&value).unwrap()
}

fn examples() -> Vec<String> {
    let md = std::fs::read_to_string(docs().join("POLICY.md")).unwrap();
    let mut out = Vec::new();
    let mut rest = md.as_str();
    while let Some(start) = rest.find("```json\n") {
        let body = &rest[start + 8..];
        let end = body.find("```").unwrap();
        out.push(body[..end].to_string());
        rest = &body[end..];
    }
    out
}

fn schema_ok(v: &jsonschema::Validator, json: &str) -> Result<(), String> {
    let value: serde_json::Value = serde_json::from_str(json).unwrap();
    let errors: Vec<String> = v.iter_errors(&value).map(|e| e.to_string()).collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

#[test]
fn every_example_parses_and_matches_the_schema() {
    let v = schema();
    let examples = examples();
    assert!(examples.len() >= 5, "{} examples", examples.len());
    for json in &examples {
        let p = Policy::parse_new(json).unwrap_or_else(|e| panic!("{e}\n{json}"));
        schema_ok(&v, json).unwrap_or_else(|e| panic!("{e}\n{json}"));
        schema_ok(&v, &p.canonical_json())
            .unwrap_or_else(|e| panic!("{e}\n{}", p.canonical_json()));
    }
}

#[test]
fn schema_refuses_what_the_parser_refuses() {
    let v = schema();
    for json in [
        r#"{}"#,
        r#"{"version":2,"enabled":true}"#,
        r#"{"version":3,"enabled":true,"allowed_kinds":[]}"#,
        r#"{"version":2,"enabled":true,"allowed_kinds":["evm_sign"]}"#,
        r#"{"version":2,"enabled":true,"allowed_kinds":[],"extra":1}"#,
        r#"{"version":2,"enabled":true,"allowed_kinds":[],"evm":{"max_gas":1}}"#,
        r#"{"version":2,"enabled":true,"allowed_kinds":[],"evm":{"max_fee_wei":"1e18"}}"#,
        r#"{"version":2,"enabled":true,"allowed_kinds":[],"evm":{"tokens":{"0x12":{"max_per_tx":"1"}}}}"#,
        r#"{"version":2,"enabled":true,"allowed_kinds":[],"evm":{"function_selectors":{"0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed":["0x1234"]}}}"#,
        r#"{"version":2,"enabled":true,"allowed_kinds":[],"rate_limit":{"max_signatures":1,"window_secs":0}}"#,
        r#"{"version":2,"enabled":true,"allowed_kinds":[],"solana":{"spl_tokens":{"EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v":{}}}}"#,
        r#"{"version":1,"enabled":true,"allowed_kinds":[]}"#,
        r#"{"enabled":true,"evm":{"tokens":{}}}"#,
    ] {
        assert!(Policy::parse(json).is_err(), "parser accepted {json}");
        assert!(schema_ok(&v, json).is_err(), "schema accepted {json}");
    }
}

#[test]
fn every_rule_is_documented() {
    let md = std::fs::read_to_string(docs().join("POLICY.md")).unwrap();
    for r in Rule::ALL {
        assert!(
            md.contains(&format!("| `{}` |", r.as_str())),
            "{} is not in the rules table",
            r.as_str()
        );
    }
}
