//! The backstop generator: its registry, its objects and the files generated from it.

use std::path::Path;

use super::*;
use crate::{policy::Mode, rules::DEFAULT_CASE};
use k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicy;

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

fn target(name: &str) -> Target {
    Target::excluding(
        name,
        "stsguard/stsguard".parse().unwrap(),
        &["stsguard".to_owned()],
    )
}

/// The rule cases a generated policy holds, from its variables.
fn cases(vap: &ValidatingAdmissionPolicy) -> Vec<(&'static str, &'static str)> {
    vap.spec
        .as_ref()
        .unwrap()
        .variables
        .iter()
        .flatten()
        .filter_map(|v| case_of_variable(&v.name))
        .collect()
}

#[test]
fn the_default_policy_gives_a_deny_and_a_warn_policy() {
    let backstop = generate(&Policy::builtin(), &target(DEFAULT_NAME));
    let names: Vec<_> = backstop
        .validating
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
    assert_eq!(
        cases(&backstop.validating[0].0),
        [
            ("sts-service-name", "default"),
            ("sts-volume-claim-templates", "incomplete"),
            ("sts-volume-mounts", "default"),
            ("sts-selector-labels", "default")
        ]
    );
    // One validation lists every denied case; one per warned case.
    let validations = |i: usize| {
        backstop.validating[i]
            .0
            .spec
            .as_ref()
            .unwrap()
            .validations
            .as_ref()
            .unwrap()
            .len()
    };
    assert_eq!(validations(0), 1);
    assert_eq!(validations(1), cases(&backstop.validating[1].0).len());
    assert!(
        backstop
            .left_to_webhook
            .contains(&"sts-governing-service-exists")
    );
    assert!(!backstop.left_to_webhook.contains(&"sts-service-name"));
}

#[test]
fn every_policy_steps_aside_for_the_webhooks_service() {
    let backstop = generate(&Policy::builtin(), &target("x"));
    let (map, map_binding) = backstop.mutating.as_ref().unwrap();
    let mut kinds = vec![map.spec.as_ref().unwrap().param_kind.clone().unwrap()];
    let mut refs = vec![
        map_binding
            .spec
            .as_ref()
            .unwrap()
            .param_ref
            .clone()
            .unwrap(),
    ];
    for (vap, binding) in &backstop.validating {
        let spec = vap.spec.as_ref().unwrap();
        kinds.push(spec.param_kind.clone().unwrap());
        refs.push(binding.spec.param_ref.clone().unwrap());
        assert_eq!(
            spec.variables.as_ref().unwrap()[0].name,
            step_aside::WEBHOOK_READY
        );
        for v in spec.validations.iter().flatten() {
            assert!(
                v.expression.starts_with("variables.webhookReady || "),
                "{}",
                v.expression
            );
        }
        assert_eq!(
            binding.spec.match_resources,
            target("x").scope.match_resources,
            "bound where the webhooks are"
        );
    }
    for kind in kinds {
        assert_eq!(kind.kind.as_deref(), Some("EndpointSlice"));
        assert_eq!(kind.api_version.as_deref(), Some("discovery.k8s.io/v1"));
    }
    for r in refs {
        assert_eq!(r.namespace.as_deref(), Some("stsguard"));
        assert_eq!(r.parameter_not_found_action.as_deref(), Some("Allow"));
        assert_eq!(
            r.selector.unwrap().match_labels.unwrap()["kubernetes.io/service-name"],
            "stsguard"
        );
    }
    let expression = map.spec.as_ref().unwrap().mutations.as_ref().unwrap()[0]
        .json_patch
        .as_ref()
        .unwrap()
        .expression
        .clone()
        .unwrap();
    assert!(
        expression.starts_with("variables.webhookReady ? [] : "),
        "{expression}"
    );
}

#[test]
fn disabled_mutators_leave_the_mutating_policy_out() {
    let none = Policy::from_yaml(
        "mutators: {sts-inject-volume-claim-templates: false, \
         sts-complete-volume-claim-templates: false}",
        "t",
    )
    .unwrap();
    assert!(generate(&none, &target("x")).mutating.is_none());
    let one =
        Policy::from_yaml("mutators: {sts-inject-volume-claim-templates: false}", "t").unwrap();
    let (map, _) = generate(&one, &target("x")).mutating.unwrap();
    let text = serde_json::to_string(&map).unwrap();
    assert!(!text.contains("ops_sts_inject"), "{text}");
    assert!(text.contains("ops_sts_complete"), "{text}");
}

/// Every StatefulSet mutator is in the mutating policy or left out with a reason.
#[test]
fn every_mutator_has_a_cel_form_or_a_reason() {
    for mutator in crate::mutate::MUTATORS {
        let formed = mutating::MUTATOR_FORMS.iter().any(|f| f.id == mutator.id);
        let left_out = MUTATORS_LEFT_OUT.iter().any(|(id, _)| *id == mutator.id);
        assert!(
            formed != left_out,
            "{}: formed {formed}, left out {left_out}",
            mutator.id
        );
    }
}

#[test]
fn audit_mode_audits_and_warns_what_enforce_denies() {
    let backstop = generate(&Policy::builtin().with_mode(Mode::Audit), &target("x"));
    let binding = &backstop.validating[0].1;
    assert_eq!(binding.metadata.name.as_deref(), Some("x-deny"));
    assert_eq!(
        binding.spec.validation_actions,
        ["Audit".to_owned(), "Warn".to_owned()]
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
    let backstop = generate(&policy, &target(DEFAULT_NAME));
    let vap = &backstop.validating[0].0;
    assert!(!cases(vap).contains(&("sts-service-name", "default")));
    let selector = vap
        .spec
        .as_ref()
        .unwrap()
        .variables
        .iter()
        .flatten()
        .find(|v| case_of_variable(&v.name) == Some(("sts-selector-labels", "default")))
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
    for form in FORMS {
        let message = validating::message(form);
        let rule = crate::rules::find(form.rule).unwrap();
        assert!(message.starts_with(rule.id), "{message}");
        assert!(message.contains(". Fix: "), "{message}");
        assert!(message.ends_with(&flat(rule.fix)), "{message}");
        assert!(!message.contains('\n'));
    }
}

#[test]
fn a_service_is_namespace_slash_name() {
    let service: ServiceRef = "a/b".parse().unwrap();
    assert_eq!(
        (service.namespace.as_str(), service.name.as_str()),
        ("a", "b")
    );
    for bad in ["a", "/b", "a/", "a/b/c"] {
        let error = bad.parse::<ServiceRef>().unwrap_err();
        assert!(error.contains("NAMESPACE/NAME"), "{error}");
    }
}

/// The book's backstop coverage table is what the registry says; with `STSGUARD_BLESS=1` this
/// test writes it instead.
#[test]
fn book_coverage_table_matches_the_registry() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/src/backstop.md");
    let mut readme = std::fs::read_to_string(&path).unwrap();
    let begin = "<!-- backstop:begin -->\n";
    let end = "<!-- backstop:end -->";
    let start = readme
        .find(begin)
        .expect("docs/src/backstop.md lacks the backstop table markers")
        + begin.len();
    let stop = start
        + readme[start..]
            .find(end)
            .expect("docs/src/backstop.md lacks <!-- backstop:end -->");
    let table = coverage_markdown();
    if readme[start..stop] != table {
        if std::env::var_os("STSGUARD_BLESS").is_some() {
            readme.replace_range(start..stop, &table);
            std::fs::write(&path, readme).unwrap();
        } else {
            panic!(
                "docs/src/backstop.md: the coverage table is stale; run `STSGUARD_BLESS=1 cargo test --lib backstop`"
            );
        }
    }
}

#[test]
fn cel_string_literals_escape_quotes_and_backslashes() {
    assert_eq!(cel::lit(r"a'b\c"), r"'a\'b\\c'");
    assert_eq!(cel::list(&["x".to_owned(), "y".to_owned()]), "['x', 'y']");
}
