//! Tests of the policy renderer: the output for nitro-cli's measurement JSON is pinned
//! (testdata/*.golden.json; regenerate with `EKMS_UPDATE_GOLDEN=1` and review the
//! diff), and every security property of the module docs is checked on its own.

use super::*;

const ACCOUNT: &str = "111122223333";
const INSTANCE: &str = "arn:aws:iam::111122223333:role/ekms-parent-instance";
const ADMIN: &str = "arn:aws:iam::111122223333:role/ekms-kms-admin";
const CURRENT: &str = include_str!("testdata/build-enclave.json");
const PREVIOUS: &str = include_str!("testdata/build-enclave-previous.json");
const SIGNED: &str = include_str!("testdata/describe-eif-signed.json");

fn inputs(texts: &[&str], pcr8: bool) -> PolicyInputs {
    let images = texts
        .iter()
        .map(|t| Measurements::parse(t).unwrap())
        .collect();
    PolicyInputs::new(images, ACCOUNT, INSTANCE, ADMIN, pcr8, None).unwrap()
}

fn golden(name: &str, value: &Value) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/nitro/testdata")
        .join(name);
    let text = serde_json::to_string_pretty(value).unwrap() + "\n";
    if std::env::var_os("EKMS_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    let pinned = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        text,
        pinned,
        "{} changed; review and regenerate",
        path.display()
    );
}

#[test]
fn renders_the_pinned_policies_for_nitro_cli_output() {
    let i = inputs(&[CURRENT], false);
    golden("key-policy.golden.json", &render_key_policy(&i));
    golden(
        "instance-role-policy.golden.json",
        &render_instance_role_policy(&i),
    );
}

#[test]
fn previous_measurements_yield_both_pcr0s() {
    let current = Measurements::parse(CURRENT).unwrap();
    let previous = Measurements::parse(PREVIOUS).unwrap();
    let i = inputs(&[CURRENT, PREVIOUS], false);
    assert_eq!(i.pcr0s(), [current.pcr0(), previous.pcr0()]);
    let policy = render_key_policy(&i);
    let statements = policy["Statement"].as_array().unwrap();
    let allow = statements.iter().find(|s| s["Sid"] == SID_ENCLAVE).unwrap();
    assert_eq!(
        allow["Condition"]["StringEqualsIgnoreCase"][IMAGE_SHA384],
        json!([current.pcr0(), previous.pcr0()])
    );
    let deny = statements
        .iter()
        .find(|s| s["Sid"] == SID_DENY_PCR0)
        .unwrap();
    assert_eq!(
        deny["Condition"]["StringNotEqualsIgnoreCase"][IMAGE_SHA384],
        json!([current.pcr0(), previous.pcr0()])
    );
    // The same image twice is one PCR0 (a re-run of the same build).
    assert_eq!(inputs(&[CURRENT, CURRENT], false).pcr0s().len(), 1);
}

#[test]
fn never_names_root_and_never_grants_grants_or_plaintext_use() {
    for i in [
        inputs(&[CURRENT], false),
        inputs(&[SIGNED, CURRENT.replace("beb3", "beb4").as_str()], false),
    ] {
        let policy = render_key_policy(&i);
        let text = policy.to_string();
        assert!(!text.contains(":root"), "{text}");
        for s in policy["Statement"].as_array().unwrap() {
            let actions: Vec<&str> = s["Action"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap())
                .collect();
            if s["Effect"] == "Allow" {
                assert!(
                    !actions.iter().any(|a| a.contains('*')),
                    "wildcard allow: {s}"
                );
                assert!(!actions.contains(&"kms:CreateGrant"), "{s}");
                assert!(!actions.contains(&"kms:Encrypt"), "{s}");
                if s["Sid"] == SID_ADMIN {
                    assert!(
                        !actions
                            .iter()
                            .any(|a| a.contains("Decrypt") || a.contains("GenerateDataKey")),
                        "{s}"
                    );
                    assert!(s.get("Condition").is_none());
                } else {
                    assert_eq!(s["Principal"]["AWS"], INSTANCE);
                    assert!(s["Condition"]["StringEqualsIgnoreCase"][IMAGE_SHA384].is_array());
                }
            }
        }
        let planting = policy["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["Sid"] == SID_DENY_PLANTING)
            .unwrap();
        assert_eq!(planting["Principal"], "*");
        assert!(planting["Action"]
            .as_array()
            .unwrap()
            .contains(&json!("kms:CreateGrant")));
        let role = render_instance_role_policy(&i).to_string();
        assert!(
            !role.contains("GenerateRandom") && !role.contains("CreateGrant"),
            "{role}"
        );
    }
}

#[test]
fn pcr8_adds_the_signer_to_allow_and_deny() {
    let signed = Measurements::parse(SIGNED).unwrap();
    let i = inputs(&[SIGNED], true);
    let policy = render_key_policy(&i);
    let statements = policy["Statement"].as_array().unwrap();
    let allow = statements.iter().find(|s| s["Sid"] == SID_ENCLAVE).unwrap();
    assert_eq!(
        allow["Condition"]["StringEqualsIgnoreCase"][PCR8],
        json!([signed.pcr(8).unwrap()])
    );
    let deny = statements
        .iter()
        .find(|s| s["Sid"] == SID_DENY_PCR8)
        .unwrap();
    assert_eq!(
        deny["Condition"]["StringNotEqualsIgnoreCase"][PCR8],
        json!([signed.pcr(8).unwrap()])
    );
    // Without --pcr8 there is no PCR8 condition.
    assert!(!render_key_policy(&inputs(&[SIGNED], false))
        .to_string()
        .contains("PCR8"));
}

#[test]
fn rejects_bad_accounts_roles_and_pcr8_without_a_signed_image() {
    let m = || vec![Measurements::parse(CURRENT).unwrap()];
    let new = |account: &str, instance: &str, admin: &str, pcr8: bool| {
        PolicyInputs::new(m(), account, instance, admin, pcr8, None)
    };
    assert!(new("1111", INSTANCE, ADMIN, false).is_err());
    assert!(new(ACCOUNT, INSTANCE, INSTANCE, false).is_err());
    assert!(new(ACCOUNT, "arn:aws:iam::111122223333:root", ADMIN, false).is_err());
    assert!(new(
        ACCOUNT,
        "arn:aws:iam::444455556666:role/other",
        ADMIN,
        false
    )
    .is_err());
    assert!(new(
        ACCOUNT,
        INSTANCE,
        "arn:aws:iam::111122223333:user/admin",
        false
    )
    .is_err());
    assert!(new(ACCOUNT, INSTANCE, ADMIN, true).is_err());
    assert!(PolicyInputs::new(
        m(),
        ACCOUNT,
        INSTANCE,
        ADMIN,
        false,
        Some("arn:aws:kms:us-east-1:444455556666:key/x")
    )
    .is_err());
    assert!(PolicyInputs::new(
        m(),
        ACCOUNT,
        INSTANCE,
        ADMIN,
        false,
        Some("arn:aws:kms:us-east-1:111122223333:key/x")
    )
    .is_ok());
}

#[test]
fn rejects_a_debug_mode_measurements_file() {
    let dir = tempfile::tempdir().unwrap();
    let current = Measurements::parse(CURRENT).unwrap();
    let debug = dir.path().join("debug.json");
    std::fs::write(&debug, CURRENT.replace(current.pcr0(), &"0".repeat(96))).unwrap();
    let good = dir.path().join("good.json");
    std::fs::write(&good, CURRENT).unwrap();
    let args = |measurements: &std::path::Path, previous: Option<&std::path::Path>| PolicyArgs {
        measurements: measurements.to_owned(),
        previous_measurements: previous.map(std::path::Path::to_owned),
        account: ACCOUNT.into(),
        instance_role: INSTANCE.into(),
        admin_role: ADMIN.into(),
        pcr8: false,
        key_arn: None,
        out_dir: None,
    };
    for a in [args(&debug, None), args(&good, Some(&debug))] {
        let e = run(&a).unwrap_err();
        assert!(
            matches!(e, Error::Usage(_)) && e.to_string().contains("debug-mode"),
            "{e}"
        );
    }
    let out = run(&args(&good, None)).unwrap();
    assert_eq!(out["pcr0"], json!([current.pcr0()]));
    let mut to_dir = args(&good, None);
    to_dir.out_dir = Some(dir.path().join("out"));
    run(&to_dir).unwrap();
    let written: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("out/key-policy.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(written, out["key_policy"]);
}
