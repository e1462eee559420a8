//! `stsguard mutate`: manifests with the mutating webhook's changes applied, for previews and
//! as a Helm post-renderer (`helm install --post-renderer`).

use std::{path::PathBuf, process::ExitCode};

use clap::Args;

use super::{InputOptions, load_policy, nothing_in};
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
    /// Print a unified diff of what would change instead of the manifests (exit 1 when there is
    /// any, as `diff` does); `patch -p0` and `git apply -p0` apply it.
    #[arg(long)]
    pub diff: bool,
    #[command(flatten)]
    pub input: InputOptions,
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
        Ok((out, changed)) => {
            print!("{out}");
            // `--diff` says by its exit code whether anything would change, as `diff` does.
            if args.diff && changed {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(errors) => {
            for e in errors {
                eprintln!("error: {e}");
            }
            ExitCode::from(2)
        }
    }
}

/// The manifests with the mutating webhook's CREATE changes (or the diff), and whether anything
/// changed; or every reason they cannot be given whole.
fn mutate(args: &MutateArgs, policy: &Policy) -> Result<(String, bool), Vec<InputError>> {
    let mut errors = Vec::new();
    let mut notes = Vec::new();
    let inputs = manifest::read_inputs(
        &args.files,
        &args.input.exclude,
        &mut std::io::stdin().lock(),
        &mut errors,
        &mut notes,
    );
    for note in notes {
        eprintln!("note: {note}");
    }
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
                    Classified::Invalid { message, path } => errors.push(InputError {
                        file: piece.source.file.clone(),
                        line: Some(manifest::field_line(
                            piece.text,
                            piece.source.line,
                            path.as_deref(),
                        )),
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
    if objects.is_empty()
        && !args.input.allow_empty
        && files
            .iter()
            .all(|(_, p)| p.iter().all(|p| p.value.is_none()))
    {
        return Err(vec![InputError {
            file: "-".to_owned(),
            line: None,
            column: None,
            message: nothing_in(&args.files),
        }]);
    }
    let facts = ManifestFacts::new(objects.iter().map(|(s, o)| (s, o)), &args.namespace);

    let mut next = objects.iter();
    let mut out = String::new();
    let mut changed = false;
    let mut unapplied: Vec<Source> = Vec::new();
    for ((file, pieces), input) in files.iter().zip(&inputs) {
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
            if mutation.is_empty() {
                return false;
            }
            // A mutation that does not apply to its own object would be a mutator bug; the
            // document must not be passed on as if it had been mutated.
            if json_patch::patch(value, &mutation.patch).is_err() {
                unapplied.push(source.clone());
                return false;
            }
            true
        });
        match rendered {
            Ok((rewritten, rewrites)) if args.diff => {
                changed |= !rewrites.is_empty();
                out.push_str(&diff(file, &input.text, &rewritten));
            }
            Ok((rewritten, rewrites)) => {
                changed |= !rewrites.is_empty();
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
    errors.extend(unapplied.into_iter().map(|source| InputError {
        message: "the mutation does not apply to this document (please report this)".to_owned(),
        file: source.file,
        line: Some(source.line),
        column: None,
    }));
    if errors.is_empty() {
        Ok((out, changed))
    } else {
        Err(errors)
    }
}

/// A unified diff of one file as written and as mutated, with the file's path on both header
/// lines, so that `patch -p0` and `git apply -p0` apply it from where the paths were given.
fn diff(file: &str, before: &str, after: &str) -> String {
    if before == after {
        return String::new();
    }
    similar::TextDiff::from_lines(before, after)
        .unified_diff()
        .context_radius(3)
        .header(file, file)
        .to_string()
}
