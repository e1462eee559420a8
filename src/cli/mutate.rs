//! `stsguard mutate`: manifests with the mutating webhook's changes applied, for previews and
//! as a Helm post-renderer (`helm install --post-renderer`).

use std::{io::Read, path::PathBuf, process::ExitCode};

use clap::Args;
use serde_json::Value;

use super::load_policy;
use crate::{
    audit::{Classified, Object, classify},
    lookup::InMemory,
    manifest::{self, InputError},
    mutate::{self, mutate_service, mutate_statefulset},
    policy::Policy,
    review::today,
};

#[derive(Clone, Debug, Args)]
pub struct MutateArgs {
    /// Manifest file or directory (searched for *.yaml, *.yml, *.json); `-` reads stdin.
    #[arg(short = 'f', long = "filename", value_name = "PATH", required = true)]
    pub files: Vec<PathBuf>,
    /// Policy file; the built-in policy when not given.
    #[arg(long, env = "STSGUARD_POLICY")]
    pub policy: Option<PathBuf>,
    /// Namespace of objects that name none (namespace exemptions apply by it).
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// Print a unified diff of what changed instead of the manifests.
    #[arg(long)]
    pub diff: bool,
}

/// Exit code 0 with the manifests (or the diff) on stdout; 2 on input or usage errors, with
/// nothing on stdout, so a post-renderer never passes half a release on.
pub(super) fn run(args: &MutateArgs) -> ExitCode {
    let policy = match load_policy(args.policy.as_deref(), None, &[]) {
        Ok(policy) => policy,
        Err(e) => {
            eprintln!("stsguard: {e}");
            return ExitCode::from(2);
        }
    };
    let mut inputs = Vec::new();
    let mut errors = Vec::new();
    for path in &args.files {
        if path.as_os_str() == "-" {
            let mut text = String::new();
            match std::io::stdin().read_to_string(&mut text) {
                Ok(_) => inputs.push(("-".to_owned(), text, false)),
                Err(e) => errors.push(format!("-: cannot read stdin: {e}")),
            }
            continue;
        }
        let files = if path.is_dir() {
            match manifest::manifest_files(path) {
                Ok(files) => files,
                Err(e) => {
                    errors.push(format!("{}: {e}", path.display()));
                    continue;
                }
            }
        } else {
            vec![path.clone()]
        };
        for file in files {
            match std::fs::read_to_string(&file) {
                Ok(text) => {
                    let json = file.extension().is_some_and(|e| e == "json");
                    inputs.push((file.display().to_string(), text, json));
                }
                Err(e) => errors.push(format!("{}: cannot read: {e}", file.display())),
            }
        }
    }

    // Service mutators learn which StatefulSets name a Service from the same input.
    let mut facts = InMemory::new();
    for (file, text, json) in &inputs {
        let mut loaded = manifest::Loaded::default();
        manifest::parse_into(&mut loaded, file, text, *json);
        for doc in loaded.documents {
            if let Classified::Object(Object::StatefulSet(sts)) = classify(&doc.value) {
                facts.add_statefulset(&args.namespace, sts);
            }
        }
    }

    let mut out = String::new();
    for (file, text, json) in &inputs {
        let mutated = manifest::rewrite(file, text, *json, |_, value| {
            mutate_value(value, &args.namespace, &policy, &facts)
        });
        match mutated {
            Ok((_, rewrites)) if args.diff => {
                for r in rewrites {
                    out.push_str(&diff(&r.source.to_string(), &r.before, &r.after));
                }
            }
            Ok((rewritten, _)) => {
                if !out.is_empty() && !out.ends_with('\n') {
                    out.push('\n');
                }
                if !out.is_empty() && !rewritten.starts_with("---") {
                    out.push_str("---\n");
                }
                out.push_str(&rewritten);
            }
            Err(input_errors) => errors.extend(input_errors.iter().map(InputError::to_string)),
        }
    }
    if !errors.is_empty() {
        for e in errors {
            eprintln!("error: {e}");
        }
        return ExitCode::from(2);
    }
    print!("{out}");
    ExitCode::SUCCESS
}

/// Applies the CREATE mutators to a StatefulSet or Service document; other documents are left
/// alone.
fn mutate_value(
    value: &mut Value,
    default_namespace: &str,
    policy: &Policy,
    facts: &InMemory,
) -> bool {
    let Classified::Object(object) = classify(value) else {
        return false;
    };
    let subject = object.subject();
    let namespace = subject
        .metadata()
        .namespace
        .clone()
        .unwrap_or_else(|| default_namespace.to_owned());
    let create = mutate::Operation::Create;
    let mutation = match &object {
        Object::StatefulSet(sts) => mutate_statefulset(sts, &namespace, create, policy, today()),
        Object::Service(svc) => mutate_service(svc, &namespace, create, policy, facts, today()),
    };
    !mutation.is_empty() && json_patch::patch(value, &mutation.patch).is_ok()
}

fn diff(location: &str, before: &Value, after: &Value) -> String {
    let before = serde_saphyr::to_string(before).unwrap_or_default();
    let after = serde_saphyr::to_string(after).unwrap_or_default();
    similar::TextDiff::from_lines(&before, &after)
        .unified_diff()
        .context_radius(3)
        .header(
            &format!("{location} (as written)"),
            &format!("{location} (mutated)"),
        )
        .to_string()
}
