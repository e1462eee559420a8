//! The generated ValidatingAdmissionPolicies, read back from their YAML and compiled with the
//! `cel` crate, and what they answer for one request while the webhook is gone.

use std::collections::BTreeSet;

use cel::{Env, Program, Value as Cel};
use serde_json::Value;
use stsguard::{
    backstop::{self, Kinds},
    policy::Policy,
    subject::Operation,
};

use super::cel_env::{self, Request, slice};

/// A compiled backstop: each policy's variables and validations, with the rule case each
/// variable stands for and how its binding acts.
pub(crate) struct Compiled {
    pub env: std::sync::Arc<Env>,
    pub policies: Vec<CompiledPolicy>,
}

pub(crate) struct CompiledPolicy {
    pub level: Level,
    pub variables: Vec<(String, Program)>,
    /// The variables that stand for rule cases, each read by a program.
    pub cases: Vec<(Program, (&'static str, &'static str))>,
    /// Each validation, with its message expression if it has one.
    pub validations: Vec<(Program, Option<Program>)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Level {
    Deny,
    Audit,
    Warn,
}

pub(crate) fn compile(policy: &Policy) -> Compiled {
    let env = cel_env::env();
    let documents = cel_env::documents(policy, Kinds::Validating);
    let generated = backstop::generate(policy, &cel_env::target());
    let vaps: Vec<&Value> = documents
        .iter()
        .filter(|d| d["kind"] == "ValidatingAdmissionPolicy")
        .collect();
    assert_eq!(vaps.len(), generated.validating.len());
    let policies = vaps
        .iter()
        .map(|vap| {
            let name = vap["metadata"]["name"].as_str().unwrap();
            let binding = documents
                .iter()
                .find(|d| {
                    d["kind"] == "ValidatingAdmissionPolicyBinding"
                        && d["spec"]["policyName"] == name
                })
                .unwrap();
            let actions: Vec<&str> = binding["spec"]["validationActions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap())
                .collect();
            let level = match actions[..] {
                ["Deny"] => Level::Deny,
                ["Audit", "Warn"] => Level::Audit,
                ["Warn"] => Level::Warn,
                ref other => panic!("unexpected actions {other:?}"),
            };
            let spec = &vap["spec"];
            assert_eq!(spec["failurePolicy"], "Ignore");
            let variables = cel_env::variables(&env, spec);
            let cases = variables
                .iter()
                .filter_map(|(name, _)| {
                    let case = backstop::case_of_variable(name)?;
                    Some((cel_env::compile(&env, &format!("variables.{name}")), case))
                })
                .collect();
            let validations = spec["validations"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| {
                    (
                        cel_env::compile(&env, v["expression"].as_str().unwrap()),
                        v["messageExpression"]
                            .as_str()
                            .map(|m| cel_env::compile(&env, m)),
                    )
                })
                .collect();
            CompiledPolicy {
                level,
                variables,
                cases,
                validations,
            }
        })
        .collect();
    Compiled { env, policies }
}

pub(crate) type Answer = BTreeSet<(Level, &'static str, &'static str)>;

/// The rule cases the backstop finds violated for one request while the webhook is gone, and
/// what the user reads of them: the validations fail exactly when a case is violated, and each
/// violated case is named once in their messages.
pub(crate) fn backstop_answer(
    compiled: &Compiled,
    operation: Operation,
    namespace: &str,
    new: &Value,
    old: Option<&Value>,
) -> Answer {
    let gone = slice(Some(false));
    let request = Request {
        operation: operation.as_str(),
        namespace,
        object: new,
        old,
        params: &gone,
    };
    let mut answer = Answer::new();
    for policy in &compiled.policies {
        let ctx = cel_env::context(&compiled.env, &policy.variables, &request);
        let mut violated = Vec::new();
        for (name, (rule, case)) in &policy.cases {
            // `name` reads the case's variable.
            if name.execute(&ctx).unwrap() == Cel::Bool(true) {
                answer.insert((policy.level, *rule, *case));
                violated.push((*rule, *case));
            }
        }
        let mut failed = 0;
        let mut messages = String::new();
        for (validation, message) in &policy.validations {
            match validation.execute(&ctx) {
                Ok(Cel::Bool(true)) => {}
                Ok(Cel::Bool(false)) => {
                    failed += 1;
                    if let Some(message) = message {
                        match message.execute(&ctx) {
                            Ok(Cel::String(text)) => messages.push_str(&text),
                            other => panic!("message expression: {other:?} for {new}"),
                        }
                    }
                }
                other => panic!("{other:?} for {new}"),
            }
        }
        match policy.level {
            Level::Warn => assert_eq!(failed, violated.len(), "{new}"),
            _ => assert_eq!(failed, usize::from(!violated.is_empty()), "{new}"),
        }
        if policy.level != Level::Warn {
            for (rule, _) in &violated {
                assert_eq!(
                    messages.matches(&format!("{rule} ")).count()
                        + messages.matches(&format!("{rule}: ")).count(),
                    violated.iter().filter(|(r, _)| r == rule).count(),
                    "each violated case is named once: {messages}"
                );
            }
        }
    }
    answer
}
