//! A small, auditable evaluator of AWS KMS key policies (JSON, policy language version
//! `2012-10-17`), enough to gate KMS operations on attestation documents.
//!
//! Supported: `Version`, `Id`, `Statement` (object or array), `Sid`, `Effect`
//! (`Allow`/`Deny`), `Principal` (required, accepted, NOT evaluated: the emulator has a
//! single caller), `Action` (string or array, case-insensitive, `*` and `?` wildcards),
//! `Resource` (accepted; a key policy only ever applies to its own key), and
//! `Condition` with the operators `StringEquals`, `StringNotEquals`,
//! `StringEqualsIgnoreCase`, `StringNotEqualsIgnoreCase`, their `…IfExists` forms, and
//! `Null`. A condition value is a string (booleans and numbers are read as strings) or
//! a non-empty array of them (any-of).
//!
//! Semantics follow the IAM policy reference ("IAM JSON policy elements: Condition
//! operators"): several operators in a `Condition` block, and several keys under one
//! operator, must all hold; several values for one key are alternatives. When a
//! condition key is absent from the request the condition is false, except that a
//! negated operator (`StringNotEquals…`) is then true, an `…IfExists` operator is true,
//! and `Null` tests exactly that absence. An explicit `Deny` wins; otherwise an `Allow`
//! is needed; the default is deny.
//!
//! Condition keys the emulator puts into a request: `kms:RecipientAttestation:ImageSha384`
//! (PCR0 as lowercase hex) and `kms:RecipientAttestation:PCR<n>` (n in 0..=31) from a
//! verified attestation document, and `kms:EncryptionContext:<context-key>` for each
//! encryption-context pair. Condition-key names are case-insensitive, except the
//! `<context-key>` part of `kms:EncryptionContext:`, which is kept as written.
//!
//! Rejected at parse time (`MalformedPolicyDocumentException`): invalid JSON, more than
//! [`MAX_POLICY_BYTES`], unknown elements, `NotAction`/`NotResource`/`NotPrincipal`,
//! unknown condition operators (including `ForAnyValue:`/`ForAllValues:` set
//! operators), and the multi-valued key `kms:EncryptionContextKeys`, which needs them.
//! Anything this evaluator cannot evaluate faithfully is refused, never ignored.

use std::collections::BTreeMap;

use serde_json::Value;

/// Largest key policy KMS accepts: 32 KiB (AWS KMS API Reference, CreateKey `Policy`).
pub const MAX_POLICY_BYTES: usize = 32 * 1024;

/// The highest PCR index a `kms:RecipientAttestation:PCR<n>` condition key may name.
pub const MAX_PCR_INDEX: u16 = 31;

/// Why a key policy was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The policy text is longer than [`MAX_POLICY_BYTES`].
    #[error("the key policy is {0} bytes, more than the 32768 allowed")]
    TooLarge(usize),
    /// The policy text is not JSON.
    #[error("the key policy is not valid JSON: {0}")]
    Json(String),
    /// The policy is JSON but not a key policy this evaluator supports.
    #[error("malformed key policy: {0}")]
    Malformed(String),
}

/// A parsed key policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    statements: Vec<Statement>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Statement {
    sid: Option<String>,
    effect: Effect,
    /// Lowercased action patterns.
    actions: Vec<String>,
    conditions: Vec<Condition>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    Allow,
    Deny,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operator {
    StringEquals,
    StringNotEquals,
    StringEqualsIgnoreCase,
    StringNotEqualsIgnoreCase,
    Null,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Condition {
    operator: Operator,
    if_exists: bool,
    /// Normalised with [`normalize_key`].
    key: String,
    values: Vec<String>,
}

/// The outcome of evaluating a policy for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// An `Allow` statement matched and no `Deny` did.
    Allow,
    /// A `Deny` statement matched (its `Sid`, when it has one).
    ExplicitDeny(Option<String>),
    /// No statement allowed the request.
    ImplicitDeny,
}

/// What a request brings to policy evaluation: the action (`kms:Decrypt`, …) and the
/// condition keys present in the request with their single values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestContext {
    action: String,
    keys: BTreeMap<String, String>,
}

impl RequestContext {
    /// A request for `action` (e.g. `"kms:GenerateDataKey"`) with no condition keys.
    pub fn new(action: &str) -> Self {
        Self {
            action: action.to_ascii_lowercase(),
            keys: BTreeMap::new(),
        }
    }

    /// Adds condition key `key` (any case; see the module docs) with `value`.
    pub fn insert(&mut self, key: &str, value: impl Into<String>) {
        self.keys.insert(normalize_key(key), value.into());
    }

    fn value(&self, normalized_key: &str) -> Option<&str> {
        self.keys.get(normalized_key).map(String::as_str)
    }
}

/// The policy KMS gives a key created without one ("Default key policy", AWS KMS
/// Developer Guide): the account root may do everything.
pub fn default_policy(account_id: &str) -> String {
    serde_json::json!({
        "Version": "2012-10-17",
        "Id": "key-default-1",
        "Statement": [{
            "Sid": "Enable IAM User Permissions",
            "Effect": "Allow",
            "Principal": {"AWS": format!("arn:aws:iam::{account_id}:root")},
            "Action": "kms:*",
            "Resource": "*"
        }]
    })
    .to_string()
}

impl Policy {
    /// Parses and validates a key policy document.
    ///
    /// # Errors
    /// [`PolicyError`] when the text is too long, not JSON, or uses anything outside
    /// the subset described in the module docs.
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        if text.len() > MAX_POLICY_BYTES {
            return Err(PolicyError::TooLarge(text.len()));
        }
        let doc: Value = serde_json::from_str(text)
            .map_err(|e| PolicyError::Json(format!("line {} column {}", e.line(), e.column())))?;
        let doc = doc
            .as_object()
            .ok_or_else(|| malformed("the policy must be a JSON object"))?;
        let mut statements = None;
        for (name, value) in doc {
            match name.as_str() {
                "Version" => match value.as_str() {
                    Some("2012-10-17" | "2008-10-17") => {}
                    _ => return Err(malformed("Version must be \"2012-10-17\"")),
                },
                "Id" => {
                    value
                        .as_str()
                        .ok_or_else(|| malformed("Id must be a string"))?;
                }
                "Statement" => statements = Some(parse_statements(value)?),
                other => return Err(malformed(format!("unknown policy element {other:?}"))),
            }
        }
        let statements = statements.ok_or_else(|| malformed("the policy has no Statement"))?;
        Ok(Self { statements })
    }

    /// Evaluates the policy for `request`: explicit deny wins, then allow, else deny.
    pub fn evaluate(&self, request: &RequestContext) -> Decision {
        let mut allowed = false;
        for statement in &self.statements {
            if !statement.applies_to(request) {
                continue;
            }
            match statement.effect {
                Effect::Deny => return Decision::ExplicitDeny(statement.sid.clone()),
                Effect::Allow => allowed = true,
            }
        }
        if allowed {
            Decision::Allow
        } else {
            Decision::ImplicitDeny
        }
    }

    /// Whether any statement has a condition on a `kms:RecipientAttestation:` key,
    /// i.e. whether the key is meant for attested callers only (used for log lines).
    pub fn mentions_attestation(&self) -> bool {
        self.statements.iter().any(|s| {
            s.conditions
                .iter()
                .any(|c| c.key.starts_with("kms:recipientattestation:"))
        })
    }
}

impl Statement {
    fn applies_to(&self, request: &RequestContext) -> bool {
        self.actions
            .iter()
            .any(|pattern| wildcard_match(pattern, &request.action))
            && self.conditions.iter().all(|c| c.holds(request))
    }
}

impl Condition {
    fn holds(&self, request: &RequestContext) -> bool {
        let present = request.value(&self.key);
        if self.operator == Operator::Null {
            // `"Null": {"k": "true"}` holds when k is absent; "false" when present.
            return self
                .values
                .iter()
                .any(|v| v.eq_ignore_ascii_case("true") == present.is_none());
        }
        let Some(actual) = present else {
            // IAM: an absent key fails every operator except negated ones, `…IfExists`
            // and Null.
            return self.if_exists
                || matches!(
                    self.operator,
                    Operator::StringNotEquals | Operator::StringNotEqualsIgnoreCase
                );
        };
        match self.operator {
            Operator::StringEquals => self.values.iter().any(|v| v == actual),
            Operator::StringNotEquals => !self.values.iter().any(|v| v == actual),
            Operator::StringEqualsIgnoreCase => {
                self.values.iter().any(|v| eq_ignore_case(v, actual))
            }
            Operator::StringNotEqualsIgnoreCase => {
                !self.values.iter().any(|v| eq_ignore_case(v, actual))
            }
            Operator::Null => false,
        }
    }
}

fn malformed(message: impl Into<String>) -> PolicyError {
    PolicyError::Malformed(message.into())
}

fn eq_ignore_case(a: &str, b: &str) -> bool {
    a.to_lowercase() == b.to_lowercase()
}

/// Condition-key names are case-insensitive; the `<context-key>` suffix of
/// `kms:EncryptionContext:<context-key>` is kept as written.
fn normalize_key(key: &str) -> String {
    const CONTEXT_PREFIX: &str = "kms:encryptioncontext:";
    let lower = key.to_ascii_lowercase();
    if lower.starts_with(CONTEXT_PREFIX) {
        // The prefix is ASCII, so its byte length is the same in `key`.
        let suffix = key.get(CONTEXT_PREFIX.len()..).unwrap_or_default();
        format!("{CONTEXT_PREFIX}{suffix}")
    } else {
        lower
    }
}

/// Case-insensitive glob match of an action against a lowercased pattern with `*`
/// (any run) and `?` (one character). Iterative, linear backtracking on the last `*`.
fn wildcard_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

fn parse_statements(value: &Value) -> Result<Vec<Statement>, PolicyError> {
    let statements = match value {
        Value::Array(items) => items
            .iter()
            .map(parse_statement)
            .collect::<Result<Vec<_>, _>>()?,
        Value::Object(_) => vec![parse_statement(value)?],
        _ => return Err(malformed("Statement must be an object or an array")),
    };
    if statements.is_empty() {
        return Err(malformed("Statement is empty"));
    }
    Ok(statements)
}

fn parse_statement(value: &Value) -> Result<Statement, PolicyError> {
    let object = value
        .as_object()
        .ok_or_else(|| malformed("each statement must be an object"))?;
    let mut sid = None;
    let mut effect = None;
    let mut actions = None;
    let mut principal = false;
    let mut conditions = Vec::new();
    for (name, value) in object {
        match name.as_str() {
            "Sid" => {
                sid = Some(
                    value
                        .as_str()
                        .ok_or_else(|| malformed("Sid must be a string"))?
                        .to_owned(),
                )
            }
            "Effect" => {
                effect = Some(match value.as_str() {
                    Some("Allow") => Effect::Allow,
                    Some("Deny") => Effect::Deny,
                    _ => return Err(malformed("Effect must be \"Allow\" or \"Deny\"")),
                })
            }
            // Accepted, not evaluated: the emulator has one caller (module docs).
            "Principal" => {
                if !(value.is_object() || value.as_str() == Some("*")) {
                    return Err(malformed("Principal must be \"*\" or an object"));
                }
                principal = true;
            }
            // Accepted: a key policy applies only to its own key.
            "Resource" => {
                string_list(value, "Resource")?;
            }
            "Action" => actions = Some(parse_actions(value)?),
            "Condition" => conditions = parse_conditions(value)?,
            "NotAction" | "NotResource" | "NotPrincipal" => {
                return Err(malformed(format!("{name} is not supported by kms-sim")))
            }
            other => return Err(malformed(format!("unknown statement element {other:?}"))),
        }
    }
    if !principal {
        return Err(malformed("a key policy statement needs a Principal"));
    }
    Ok(Statement {
        sid,
        effect: effect.ok_or_else(|| malformed("a statement needs an Effect"))?,
        actions: actions.ok_or_else(|| malformed("a statement needs an Action"))?,
        conditions,
    })
}

/// A string or a non-empty array of strings.
fn string_list(value: &Value, element: &str) -> Result<Vec<String>, PolicyError> {
    let items: Vec<String> = match value {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| malformed(format!("{element} entries must be strings")))
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(malformed(format!("{element} must be a string or an array"))),
    };
    if items.is_empty() {
        return Err(malformed(format!("{element} is empty")));
    }
    Ok(items)
}

fn parse_actions(value: &Value) -> Result<Vec<String>, PolicyError> {
    let actions = string_list(value, "Action")?;
    actions
        .into_iter()
        .map(|action| {
            let lower = action.to_ascii_lowercase();
            if lower == "*" || (lower.starts_with("kms:") && lower.len() > 4) {
                Ok(lower)
            } else {
                Err(malformed(format!(
                    "action {action:?} is not a KMS action (kms:<Operation>)"
                )))
            }
        })
        .collect()
}

fn parse_operator(name: &str) -> Result<(Operator, bool), PolicyError> {
    let (base, if_exists) = match name.strip_suffix("IfExists") {
        Some(base) => (base, true),
        None => (name, false),
    };
    let operator = match base {
        "StringEquals" => Operator::StringEquals,
        "StringNotEquals" => Operator::StringNotEquals,
        "StringEqualsIgnoreCase" => Operator::StringEqualsIgnoreCase,
        "StringNotEqualsIgnoreCase" => Operator::StringNotEqualsIgnoreCase,
        "Null" if !if_exists => Operator::Null,
        _ => {
            return Err(malformed(format!(
                "condition operator {name:?} is not supported by kms-sim"
            )))
        }
    };
    Ok((operator, if_exists))
}

fn parse_conditions(value: &Value) -> Result<Vec<Condition>, PolicyError> {
    let block = value
        .as_object()
        .ok_or_else(|| malformed("Condition must be an object"))?;
    let mut conditions = Vec::new();
    for (operator_name, keys) in block {
        let (operator, if_exists) = parse_operator(operator_name)?;
        let keys = keys
            .as_object()
            .ok_or_else(|| malformed(format!("{operator_name} must map keys to values")))?;
        if keys.is_empty() {
            return Err(malformed(format!("{operator_name} has no condition key")));
        }
        for (key, values) in keys {
            let key = validate_condition_key(key)?;
            let values = condition_values(values)?;
            if operator == Operator::Null
                && values
                    .iter()
                    .any(|v| !v.eq_ignore_ascii_case("true") && !v.eq_ignore_ascii_case("false"))
            {
                return Err(malformed("Null takes \"true\" or \"false\""));
            }
            conditions.push(Condition {
                operator,
                if_exists,
                key,
                values,
            });
        }
    }
    Ok(conditions)
}

fn validate_condition_key(key: &str) -> Result<String, PolicyError> {
    let normalized = normalize_key(key);
    if normalized == "kms:encryptioncontextkeys" {
        return Err(malformed(
            "kms:EncryptionContextKeys is multi-valued; set operators are not supported by kms-sim",
        ));
    }
    if normalized == "kms:encryptioncontext:" {
        return Err(malformed("kms:EncryptionContext: needs a context key"));
    }
    if let Some(index) = normalized.strip_prefix("kms:recipientattestation:pcr") {
        match index.parse::<u16>() {
            Ok(n) if n <= MAX_PCR_INDEX && !index.starts_with('+') => {}
            _ => {
                return Err(malformed(format!(
                    "{key:?}: PCR index must be 0..={MAX_PCR_INDEX}"
                )))
            }
        }
    }
    Ok(normalized)
}

fn condition_values(value: &Value) -> Result<Vec<String>, PolicyError> {
    fn scalar(value: &Value) -> Result<String, PolicyError> {
        match value {
            Value::String(s) => Ok(s.clone()),
            Value::Bool(b) => Ok(b.to_string()),
            Value::Number(n) => Ok(n.to_string()),
            _ => Err(malformed("condition values must be strings")),
        }
    }
    let values = match value {
        Value::Array(items) => items.iter().map(scalar).collect::<Result<Vec<_>, _>>()?,
        other => vec![scalar(other)?],
    };
    if values.is_empty() {
        return Err(malformed("a condition key has an empty value list"));
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PCR0: &str = "9fedcba8abcdef7abcdef6abcdef5abcdef4abcdef3abcdef2abcdef1abcdef1abcdef0abcdef1abcdef2abcdef3abcdef4abcdef5abcdef6abcdef7abcdef8";

    fn enclave_policy(operator: &str) -> Policy {
        Policy::parse(
            &serde_json::json!({
                "Version": "2012-10-17",
                "Statement": [
                    {"Sid": "admin", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111122223333:root"},
                     "Action": ["kms:CreateKey", "kms:Describe*", "kms:GetKeyPolicy", "kms:PutKeyPolicy"], "Resource": "*"},
                    {"Sid": "enclave", "Effect": "Allow", "Principal": {"AWS": "*"},
                     "Action": ["kms:Decrypt", "kms:GenerateDataKey"], "Resource": "*",
                     "Condition": {operator: {"kms:RecipientAttestation:ImageSha384": PCR0}}}
                ]
            })
            .to_string(),
        )
        .unwrap()
    }

    fn attested(action: &str, pcr0: &str) -> RequestContext {
        let mut ctx = RequestContext::new(action);
        ctx.insert("kms:RecipientAttestation:ImageSha384", pcr0);
        ctx.insert("kms:RecipientAttestation:PCR0", pcr0);
        ctx
    }

    #[test]
    fn allows_matching_image_digest() {
        let policy = enclave_policy("StringEqualsIgnoreCase");
        assert_eq!(
            policy.evaluate(&attested("kms:Decrypt", PCR0)),
            Decision::Allow
        );
        let upper = PCR0.to_uppercase();
        assert_eq!(
            policy.evaluate(&attested("kms:Decrypt", &upper)),
            Decision::Allow
        );
        assert!(policy.mentions_attestation());
    }

    #[test]
    fn rejects_other_image_digest_and_missing_document() {
        let policy = enclave_policy("StringEquals");
        let other = PCR0.replace('9', "8");
        assert_eq!(
            policy.evaluate(&attested("kms:Decrypt", &other)),
            Decision::ImplicitDeny
        );
        // StringEquals is case-sensitive.
        assert_eq!(
            policy.evaluate(&attested("kms:Decrypt", &PCR0.to_uppercase())),
            Decision::ImplicitDeny
        );
        // No Recipient: the key is absent, so the condition is false.
        assert_eq!(
            policy.evaluate(&RequestContext::new("kms:GenerateDataKey")),
            Decision::ImplicitDeny
        );
        // Actions outside every statement.
        assert_eq!(
            policy.evaluate(&attested("kms:Encrypt", PCR0)),
            Decision::ImplicitDeny
        );
    }

    #[test]
    fn allows_wildcard_actions_case_insensitively() {
        let policy = enclave_policy("StringEquals");
        assert_eq!(
            policy.evaluate(&RequestContext::new("kms:DescribeKey")),
            Decision::Allow
        );
        let default = Policy::parse(&default_policy("111122223333")).unwrap();
        assert_eq!(
            default.evaluate(&RequestContext::new("KMS:GenerateDataKey")),
            Decision::Allow
        );
        assert!(!default.mentions_attestation());
        assert!(wildcard_match("kms:*key*", "kms:generatedatakey"));
        assert!(wildcard_match("kms:?ncrypt", "kms:encrypt"));
    }

    #[test]
    fn rejects_non_matching_wildcards() {
        assert!(!wildcard_match("kms:describe*", "kms:decrypt"));
        assert!(!wildcard_match("kms:?crypt", "kms:decrypt"));
        assert!(!wildcard_match("kms:encrypt", "kms:encrypt2"));
    }

    #[test]
    fn explicit_deny_wins() {
        let policy = Policy::parse(
            r#"{"Statement":[
                {"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*"},
                {"Sid":"no-plain","Effect":"Deny","Principal":"*","Action":"kms:Decrypt","Resource":"*",
                 "Condition":{"Null":{"kms:RecipientAttestation:ImageSha384":"true"}}}]}"#,
        )
        .unwrap();
        assert_eq!(
            policy.evaluate(&RequestContext::new("kms:Decrypt")),
            Decision::ExplicitDeny(Some("no-plain".into()))
        );
        assert_eq!(
            policy.evaluate(&attested("kms:Decrypt", PCR0)),
            Decision::Allow
        );
    }

    #[test]
    fn if_exists_and_negated_operators_follow_iam() {
        let policy = Policy::parse(
            r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"kms:Decrypt","Resource":"*",
                "Condition":{"StringEqualsIfExists":{"kms:RecipientAttestation:PCR8":"aa"},
                             "StringNotEquals":{"kms:EncryptionContext:tenant":"blocked"}}}}"#,
        )
        .unwrap();
        // Both keys absent: IfExists holds, negated operator holds.
        assert_eq!(
            policy.evaluate(&RequestContext::new("kms:Decrypt")),
            Decision::Allow
        );
        let mut ctx = RequestContext::new("kms:Decrypt");
        ctx.insert("kms:RecipientAttestation:PCR8", "aa");
        ctx.insert("kms:EncryptionContext:tenant", "ok");
        assert_eq!(policy.evaluate(&ctx), Decision::Allow);
    }

    #[test]
    fn rejects_present_but_different_values() {
        let policy = Policy::parse(
            r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"kms:Decrypt","Resource":"*",
                "Condition":{"StringEqualsIfExists":{"kms:RecipientAttestation:PCR8":["aa","bb"]},
                             "StringNotEquals":{"kms:EncryptionContext:tenant":"blocked"}}}}"#,
        )
        .unwrap();
        let mut ctx = RequestContext::new("kms:Decrypt");
        ctx.insert("kms:RecipientAttestation:PCR8", "cc");
        assert_eq!(policy.evaluate(&ctx), Decision::ImplicitDeny);
        let mut ctx = RequestContext::new("kms:Decrypt");
        ctx.insert("kms:encryptioncontext:tenant", "blocked");
        assert_eq!(policy.evaluate(&ctx), Decision::ImplicitDeny);
        // The context-key part is case-sensitive.
        let mut ctx = RequestContext::new("kms:Decrypt");
        ctx.insert("kms:EncryptionContext:Tenant", "blocked");
        assert_eq!(policy.evaluate(&ctx), Decision::Allow);
    }

    #[test]
    fn rejects_malformed_policies() {
        let cases = [
            "not json",
            "[]",
            r#"{"Version":"2012-10-17"}"#,
            r#"{"Statement":[]}"#,
            r#"{"Version":"2020-01-01","Statement":{"Effect":"Allow","Principal":"*","Action":"kms:*"}}"#,
            r#"{"Statement":{"Effect":"Maybe","Principal":"*","Action":"kms:*"}}"#,
            r#"{"Statement":{"Effect":"Allow","Action":"kms:*"}}"#,
            r#"{"Statement":{"Effect":"Allow","Principal":"*"}}"#,
            r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"s3:GetObject"}}"#,
            r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":[]}}"#,
            r#"{"Statement":{"Effect":"Allow","Principal":"*","NotAction":"kms:Decrypt"}}"#,
            r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"kms:*","Extra":1}}"#,
            r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"kms:*","Condition":{"StringLike":{"a":"b"}}}}"#,
            r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"kms:*","Condition":{"ForAnyValue:StringEquals":{"a":"b"}}}}"#,
            r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"kms:*","Condition":{"NullIfExists":{"a":"true"}}}}"#,
            r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"kms:*","Condition":{"Null":{"a":"maybe"}}}}"#,
            r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"kms:*","Condition":{"StringEquals":{"a":[]}}}}"#,
            r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"kms:*","Condition":{"StringEquals":{"a":{"b":1}}}}}"#,
            r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"kms:*","Condition":{"StringEquals":{"kms:RecipientAttestation:PCR32":"aa"}}}}"#,
            r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"kms:*","Condition":{"StringEquals":{"kms:EncryptionContextKeys":"aa"}}}}"#,
        ];
        for case in cases {
            assert!(Policy::parse(case).is_err(), "accepted: {case}");
        }
    }

    #[test]
    fn rejects_oversized_policy() {
        let padding = " ".repeat(MAX_POLICY_BYTES);
        let text = format!("{}{padding}", default_policy("111122223333"));
        assert!(matches!(
            Policy::parse(&text),
            Err(PolicyError::TooLarge(_))
        ));
    }

    #[test]
    fn accepts_statement_object_and_scalar_condition_values() {
        let policy = Policy::parse(
            r#"{"Statement":{"Effect":"Allow","Principal":{"AWS":"*"},"Action":"kms:GenerateRandom",
                "Condition":{"StringEquals":{"kms:EncryptionContext:epoch":7}}}}"#,
        )
        .unwrap();
        let mut ctx = RequestContext::new("kms:GenerateRandom");
        ctx.insert("kms:EncryptionContext:epoch", "7");
        assert_eq!(policy.evaluate(&ctx), Decision::Allow);
    }
}
