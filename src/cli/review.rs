//! `stsguard review`: a manifest wrapped into the `admission.k8s.io/v1` AdmissionReview the API
//! server would send for it, to try a running webhook with curl.

use std::{path::PathBuf, process::ExitCode};

use clap::{Args, ValueEnum};
use serde_json::Value;

use super::nothing_in;
use crate::{admit, manifest, review::admission_review, subject::Operation};

#[derive(Clone, Debug, Args)]
pub struct ReviewArgs {
    /// The manifest (one StatefulSet or Service; `-` reads stdin).
    #[arg(short = 'f', long = "filename", value_name = "PATH")]
    pub file: PathBuf,
    /// The operation the review asks about.
    #[arg(long, value_enum, default_value = "create")]
    pub operation: OperationArg,
    /// The object as it was before an UPDATE (the object being deleted, for DELETE).
    #[arg(long, value_name = "PATH")]
    pub old: Option<PathBuf>,
    /// Namespace of objects that name none.
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// The review's uid.
    #[arg(long, default_value = "stsguard-review-0001")]
    pub uid: String,
    /// Which object, when the file holds several: its kind (StatefulSet or Service).
    #[arg(long)]
    pub kind: Option<String>,
    /// Which object, when the file holds several: its name.
    #[arg(long)]
    pub name: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OperationArg {
    Create,
    Update,
    Delete,
}

impl From<OperationArg> for Operation {
    fn from(op: OperationArg) -> Operation {
        match op {
            OperationArg::Create => Operation::Create,
            OperationArg::Update => Operation::Update,
            OperationArg::Delete => Operation::Delete,
        }
    }
}

/// Prints the review as JSON; exit 2 when the input is not exactly one StatefulSet or Service.
pub(super) fn run(args: &ReviewArgs) -> ExitCode {
    let operation = Operation::from(args.operation);
    let object = match object_of(&args.file, args) {
        Ok(object) => object,
        Err(e) => {
            eprintln!("stsguard: {e}");
            return ExitCode::from(2);
        }
    };
    let old = match (&args.old, operation) {
        (Some(path), _) => match object_of(path, args) {
            Ok(old) => Some(old),
            Err(e) => {
                eprintln!("stsguard: --old: {e}");
                return ExitCode::from(2);
            }
        },
        (None, Operation::Update) => {
            eprintln!("stsguard: --operation update needs --old (the object before the update)");
            return ExitCode::from(2);
        }
        (None, _) => None,
    };
    let old = match operation {
        // A deletion carries the deleted object as oldObject.
        Operation::Delete => old.or_else(|| Some(object.clone())),
        _ => old,
    };
    let review = admission_review(&args.uid, operation, &object, old.as_ref(), &args.namespace);
    println!(
        "{}",
        serde_json::to_string_pretty(&review).unwrap_or_default()
    );
    ExitCode::SUCCESS
}

/// The one StatefulSet or Service in a file (of `--kind` and `--name`, where given), checked as
/// the audit checks it.
fn object_of(path: &PathBuf, args: &ReviewArgs) -> Result<Value, String> {
    let loaded = manifest::load(std::slice::from_ref(path), &mut std::io::stdin().lock());
    if let Some(e) = loaded.errors.first() {
        return Err(e.to_string());
    }
    let mut judged = Vec::new();
    for doc in &loaded.documents {
        match admit::classify(&doc.value) {
            admit::Classified::Invalid { message, path } => {
                return Err(format!(
                    "{}:{}: {message}",
                    doc.source.file,
                    doc.line_of(path.as_deref())
                ));
            }
            admit::Classified::Other => {}
            _ => judged.push(doc.value.clone()),
        }
    }
    let field = |v: &Value, pointer: &str| {
        v.pointer(pointer)
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    judged.retain(|v| {
        args.kind
            .as_ref()
            .is_none_or(|k| field(v, "/kind").as_ref() == Some(k))
            && args
                .name
                .as_ref()
                .is_none_or(|n| field(v, "/metadata/name").as_ref() == Some(n))
    });
    match judged.len() {
        1 => Ok(judged.remove(0)),
        0 if loaded.documents.is_empty() => Err(nothing_in(std::slice::from_ref(path))),
        0 => Err(format!(
            "{}: no StatefulSet or Service{} (stsguard reviews only those)",
            path.display(),
            if args.kind.is_some() || args.name.is_some() {
                " matches --kind and --name"
            } else {
                ""
            }
        )),
        n => Err(format!(
            "{}: {n} StatefulSets and Services match; a review asks about one (choose with \
             --kind and --name)",
            path.display()
        )),
    }
}
