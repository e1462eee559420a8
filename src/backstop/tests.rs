//! The backstop generator: its registry, its objects and the files generated from it.

use std::path::Path;

use super::*;
use crate::rules::DEFAULT_CASE;

/// A rule that judges a StatefulSet by itself cannot silently miss the backstop: each of its
/// cases has a CEL form, or the rule is left out with a reason.
#[test]
fn every_in_object_rule_has_a_cel_form_or_a_reason() {
    for rule in RULES {
        if rule.needs_lookup {
            assert!(
                !FORMS.iter().any(|f| f.rule == rule.id),
                "{} needs lookups, so CEL cannot decide it",
                rule.id
            );
            continue;
        }
        if let Some((_, reason)) = LEFT_OUT.iter().find(|(id, _)| *id == rule.id) {
            assert!(
                reason.len() > 20,
                "{} is left out without a reason",
                rule.id
            );
            continue;
        }
        for case in rule.cases {
            assert!(
                FORMS
                    .iter()
                    .any(|f| f.rule == rule.id && f.case == case.name),
                "{} case {} has no CEL form in src/backstop/cel.rs and no reason in LEFT_OUT",
                rule.id,
                case.name
            );
        }
    }
    for form in FORMS {
        let rule = crate::rules::find(form.rule).expect("FORMS names a known rule");
        assert!(
            rule.case(form.case).is_some(),
            "{} has no case {}",
            rule.id,
            form.case
        );
        assert!(
            rule.cases.len() > 1 || form.case == DEFAULT_CASE,
            "{}",
            rule.id
        );
    }
    for (id, _) in LEFT_OUT {
        assert!(
            crate::rules::find(id).is_some(),
            "LEFT_OUT names unknown {id}"
        );
    }
}

#[test]
fn the_default_policy_gives_a_deny_and_a_warn_policy() {
    let backstop = generate(&Policy::builtin(), DEFAULT_NAME);
    let names: Vec<_> = backstop
        .objects
        .iter()
        .map(|(vap, binding)| {
            (
                vap.metadata.name.clone().unwrap(),
                binding.spec.validation_actions.clone(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            ("stsguard-backstop-deny".to_owned(), vec!["Deny".to_owned()]),
            ("stsguard-backstop-warn".to_owned(), vec!["Warn".to_owned()])
        ]
    );
    let deny: Vec<_> = backstop.objects[0]
        .0
        .spec
        .as_ref()
        .unwrap()
        .validations
        .as_ref()
        .unwrap()
        .iter()
        .map(|v| check_of(v).unwrap())
        .collect();
    assert_eq!(
        deny,
        [
            ("sts-service-name", "default"),
            ("sts-volume-claim-templates", "incomplete"),
            ("sts-volume-mounts", "default"),
            ("sts-selector-labels", "default")
        ]
    );
    assert!(
        backstop
            .left_to_webhook
            .contains(&"sts-governing-service-exists")
    );
    assert!(!backstop.left_to_webhook.contains(&"sts-service-name"));
}

#[test]
fn audit_mode_audits_and_warns_what_enforce_denies() {
    let backstop = generate(&Policy::builtin().with_mode(Mode::Audit), "x");
    let binding = &backstop.objects[0].1;
    assert_eq!(binding.metadata.name.as_deref(), Some("x-deny"));
    assert_eq!(
        Some(binding.spec.validation_actions.as_slice()),
        Some(&["Audit".to_owned(), "Warn".to_owned()][..])
    );
}

#[test]
fn rules_turned_off_are_left_out_and_namespace_exemptions_are_written_in() {
    let policy = Policy::from_yaml(
        "rules: {sts-service-name: off}\n\
         exemptions: [{namespaces: [legacy], rules: [sts-selector-labels], reason: old}]",
        "t",
    )
    .unwrap();
    let backstop = generate(&policy, DEFAULT_NAME);
    let validations = backstop.objects[0]
        .0
        .spec
        .as_ref()
        .unwrap()
        .validations
        .as_ref()
        .unwrap();
    assert!(
        validations
            .iter()
            .all(|v| check_of(v) != Some(("sts-service-name", "default")))
    );
    let selector = validations
        .iter()
        .find(|v| check_of(v) == Some(("sts-selector-labels", "default")))
        .unwrap();
    assert!(
        selector
            .expression
            .contains("request.namespace in ['legacy']")
    );
    assert!(!backstop.left_to_webhook.contains(&"sts-service-name"));
}

#[test]
fn messages_name_the_rule_and_the_fix() {
    let backstop = generate(
        &Policy::from_yaml("rules: {sts-pod-anti-affinity: warn}", "t").unwrap(),
        DEFAULT_NAME,
    );
    for (vap, _) in &backstop.objects {
        for v in vap.spec.as_ref().unwrap().validations.as_ref().unwrap() {
            let message = v.message.as_deref().unwrap();
            let (rule, _) = check_of(v).unwrap_or_else(|| panic!("{message}"));
            let rule = crate::rules::find(rule).unwrap();
            assert!(message.contains(". Fix: "), "{message}");
            assert!(message.ends_with(&flat(rule.fix)), "{message}");
            assert!(!message.contains('\n'));
        }
    }
}

/// The chart's backstop is what `stsguard policy export --format vap` prints for the chart's
/// policy; with `STSGUARD_BLESS=1` this test writes it instead.
#[test]
fn the_charts_backstop_is_generated_from_the_charts_policy() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let policy_path = root.join("charts/stsguard/files/default-policy.yaml");
    let policy = Policy::load(&policy_path).unwrap();
    let text = yaml(
        &generate(&policy, DEFAULT_NAME),
        "files/default-policy.yaml",
    )
    .unwrap();
    let file = root.join("charts/stsguard/files/backstop.yaml");
    if std::fs::read_to_string(&file).ok().as_deref() != Some(text.as_str()) {
        if std::env::var_os("STSGUARD_BLESS").is_some() {
            std::fs::write(&file, &text).unwrap();
        } else {
            panic!(
                "{} is stale; run `STSGUARD_BLESS=1 cargo test --lib backstop` to regenerate",
                file.display()
            );
        }
    }
}

/// The README's "When the webhook is down" table is what the registry says; with
/// `STSGUARD_BLESS=1` this test writes it instead.
#[test]
fn readme_coverage_table_matches_the_registry() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let mut readme = std::fs::read_to_string(&path).unwrap();
    let begin = "<!-- backstop:begin -->\n";
    let end = "<!-- backstop:end -->";
    let start = readme
        .find(begin)
        .expect("README lacks the backstop table markers")
        + begin.len();
    let stop = start
        + readme[start..]
            .find(end)
            .expect("README lacks <!-- backstop:end -->");
    let table = coverage_markdown();
    if readme[start..stop] != table {
        if std::env::var_os("STSGUARD_BLESS").is_some() {
            readme.replace_range(start..stop, &table);
            std::fs::write(&path, readme).unwrap();
        } else {
            panic!(
                "README's backstop table is stale; run `STSGUARD_BLESS=1 cargo test --lib backstop`"
            );
        }
    }
}

#[test]
fn cel_string_literals_escape_quotes_and_backslashes() {
    assert_eq!(cel::lit(r"a'b\c"), r"'a\'b\\c'");
    assert_eq!(cel::list(&["x".to_owned(), "y".to_owned()]), "['x', 'y']");
}
