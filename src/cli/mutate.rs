//! `stsguard mutate`: manifests with the mutating webhook's changes applied, for previews and
//! as a Helm post-renderer (`helm install --post-renderer`).

use std::{path::PathBuf, process::ExitCode};

use clap::Args;
use serde_json::Value;

use super::load_policy;
use crate::{
    admit::{self, Chain, Classified, Request},
    audit::ManifestFacts,
    lookup::{Lookup, NoLookup},
    manifest::{self, InputError, Piece, Source},
    policy::{Lookups, Policy},
    subject::{self, Object, Operation},
    time::today,
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
    match mutate(args, &policy) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in errors {
                eprintln!("error: {e}");
            }
            ExitCode::from(2)
        }
    }
}

/// The manifests with the mutating webhook's CREATE changes, or every reason they cannot be
/// given whole.
fn mutate(args: &MutateArgs, policy: &Policy) -> Result<String, Vec<InputError>> {
    let mut errors = Vec::new();
    let inputs = manifest::read_inputs(&args.files, &mut std::io::stdin().lock(), &mut errors);
    let files: Vec<(&str, Vec<Piece>)> = inputs
        .iter()
        .map(|input| {
            let pieces = manifest::pieces(&input.file, &input.text, input.json, &mut errors);
            (input.file.as_str(), pieces)
        })
        .collect();

    // Each object as the API server would hand it to the mutating webhook (defaulted), by
    // document, for the Service mutators' facts and for the mutation itself.
    let mut objects: Vec<(Source, Object)> = Vec::new();
    for (_, pieces) in &files {
        for piece in pieces {
            for value in piece.value.iter().flat_map(manifest::items) {
                match admit::classify(value) {
                    Classified::Object(object) | Classified::Legacy(object, _) => {
                        objects.push((piece.source.clone(), admit::default(object)));
                    }
                    Classified::Invalid(message) => errors.push(InputError {
                        file: piece.source.file.clone(),
                        line: Some(piece.source.line),
                        column: None,
                        message,
                    }),
                    Classified::Other => {}
                }
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let facts = ManifestFacts::new(objects.iter().map(|(s, o)| (s, o)), &args.namespace);

    let mut next = objects.iter();
    let mut out = String::new();
    for (_, pieces) in &files {
        let rendered = manifest::render(pieces, |source, value| {
            if !admit::judges(value) {
                return false;
            }
            let Some((_, object)) = next.next() else {
                return false;
            };
            let near = facts.near(&source.file);
            let lookup: &dyn Lookup = match policy.lookups {
                Lookups::Auto => &near,
                Lookups::Off => &NoLookup,
            };
            let chain = Chain {
                policy,
                lookup,
                today: today(),
            };
            let mutation = chain.mutate(&Request {
                operation: Operation::Create,
                namespace: subject::namespace(object.subject().metadata(), &args.namespace),
                object: object.subject(),
                old: None,
            });
            !mutation.is_empty() && json_patch::patch(value, &mutation.patch).is_ok()
        });
        match rendered {
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
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
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
