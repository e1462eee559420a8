//! Reading manifests: files, directories, stdin; multi-document YAML, JSON and `kind: List`.
//! Every document keeps where it came from (file and line) and its original text, so reports can
//! point at it and `stsguard mutate` can pass untouched documents through byte for byte.

use std::{
    fmt,
    io::Read,
    path::{Path, PathBuf},
};

use serde_json::Value;

mod fast_yaml;
mod locate;
mod render;
mod walk;
mod yaml;

pub use render::{Rewrite, render};
pub use walk::{Walk, manifest_files};
pub(crate) use yaml::yaml_message;
use yaml::{first_content_line, split_documents, strip_position, unclosed};

use locate::locate;

/// Where a document starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    /// The file as given (or found under a given directory); `-` for stdin.
    pub file: String,
    /// 1-based line of the document's first content line.
    pub line: usize,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// One parsed document.
#[derive(Clone, Debug)]
pub struct Document {
    pub source: Source,
    /// The document's text as read, without its `---` marker.
    pub text: String,
    pub value: Value,
}

/// A document or input that could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputError {
    pub file: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        write!(f, ": {}", self.message)
    }
}

impl Document {
    /// The line where the field at `path` is written, or the document's first line.
    pub fn line_of(&self, path: Option<&str>) -> usize {
        field_line(&self.text, self.source.line, path)
    }
}

/// The line where the field at `path` is written in a document whose text starts its content
/// at `line`; `line` itself when it cannot be told.
pub fn field_line(text: &str, line: usize, path: Option<&str>) -> usize {
    let first = first_content_line(text).unwrap_or(0);
    path.and_then(|p| locate(text, p))
        .map_or(line, |at| line - first + at)
}

/// Everything read from the inputs, in order.
#[derive(Debug, Default)]
pub struct Loaded {
    pub documents: Vec<Document>,
    pub errors: Vec<InputError>,
    /// What was passed over, and why (a chart's templates, a symlink loop).
    pub notes: Vec<String>,
}

/// Reads every input: `-` is stdin, a directory is searched recursively for `*.yaml`, `*.yml`
/// and `*.json` (in name order), anything else is read as a file.
pub fn load(inputs: &[PathBuf], stdin: &mut dyn Read) -> Loaded {
    load_excluding(inputs, &[], stdin)
}

/// [`load`], leaving out what the `exclude` globs match under a directory.
pub fn load_excluding(inputs: &[PathBuf], exclude: &[String], stdin: &mut dyn Read) -> Loaded {
    let mut loaded = Loaded::default();
    let read = read_inputs(
        inputs,
        exclude,
        stdin,
        &mut loaded.errors,
        &mut loaded.notes,
    );
    for input in read {
        parse_into(&mut loaded, &input.file, &input.text, input.json);
    }
    loaded
}

/// One input's text, as read.
#[derive(Debug)]
pub struct Input {
    /// The file as given (or found under a given directory); `-` for stdin.
    pub file: String,
    pub text: String,
    /// Read as one JSON document rather than a YAML stream.
    pub json: bool,
}

/// Reads the inputs' text: `-` is stdin, a directory is searched for manifests (see
/// [`manifest_files`]), anything else is a file. What cannot be read is recorded in `errors`, what
/// was passed over in `notes`.
pub fn read_inputs(
    inputs: &[PathBuf],
    exclude: &[String],
    stdin: &mut dyn Read,
    errors: &mut Vec<InputError>,
    notes: &mut Vec<String>,
) -> Vec<Input> {
    let mut read = Vec::new();
    for input in inputs {
        if input.as_os_str() == "-" {
            let mut text = String::new();
            match stdin.read_to_string(&mut text) {
                Ok(_) => read.push(Input {
                    file: "-".to_owned(),
                    text,
                    json: false,
                }),
                Err(e) => errors.push(whole_file("-", format!("cannot read stdin: {e}"))),
            }
        } else if input.is_dir() {
            match manifest_files(input, exclude) {
                Ok(walk) => {
                    read.extend(walk.files.iter().filter_map(|f| read_file(f, errors)));
                    notes.extend(walk.notes);
                }
                Err(e) => errors.push(whole_file(&input.display().to_string(), e)),
            }
        } else {
            read.extend(read_file(input, errors));
        }
    }
    read
}

fn whole_file(file: &str, message: String) -> InputError {
    InputError {
        file: file.to_owned(),
        line: None,
        column: None,
        message,
    }
}

fn read_file(path: &Path, errors: &mut Vec<InputError>) -> Option<Input> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path)
        .map_err(|e| errors.push(whole_file(&name, format!("cannot read: {e}"))))
        .ok()?;
    match String::from_utf8(bytes) {
        Ok(text) => Some(Input {
            json: path.extension().is_some_and(|e| e == "json"),
            file: name,
            text,
        }),
        Err(e) => {
            errors.push(whole_file(
                &name,
                format!(
                    "not UTF-8 text (invalid byte at offset {})",
                    e.utf8_error().valid_up_to()
                ),
            ));
            None
        }
    }
}

/// Parses one input's text into documents; a bad document is recorded and the rest still read.
pub fn parse_into(loaded: &mut Loaded, file: &str, text: &str, json: bool) {
    for piece in pieces(file, text, json, &mut loaded.errors) {
        if let Some(value) = piece.value {
            push_value(loaded, piece.source, piece.text, value);
        }
    }
}

/// One document of an input as written: its `---` marker, its text and where it starts, and its
/// value (none for a document of only comments, or one that did not parse), or what was made of
/// it (see [`pieces_read`]).
#[derive(Debug)]
pub struct Piece<'a, T = Value> {
    pub marker: &'a str,
    pub text: &'a str,
    pub source: Source,
    pub value: Option<T>,
}

/// Splits one input into its documents and parses each once; the errors of documents that do not
/// parse go to `errors` (their pieces keep no value) and the others are still read.
pub fn pieces<'a>(
    file: &str,
    text: &'a str,
    json: bool,
    errors: &mut Vec<InputError>,
) -> Vec<Piece<'a>> {
    pieces_read(file, text, json, errors, |_, _, value| value)
}

/// [`pieces`], with each parsed value handed to `read` (with where the document starts and its
/// text) on the thread that parsed it, so that only what `read` keeps outlives the parse: the
/// offline audit keeps compact objects, not value trees.
pub fn pieces_read<'a, T: Send>(
    file: &str,
    text: &'a str,
    json: bool,
    errors: &mut Vec<InputError>,
    read: impl Fn(&Source, &str, Value) -> T + Sync,
) -> Vec<Piece<'a, T>> {
    let source = |line| Source {
        file: file.to_owned(),
        line,
    };
    if json {
        let source = source(1);
        let value = serde_json::from_str::<Value>(text)
            .map_err(|e| {
                errors.push(InputError {
                    file: file.to_owned(),
                    line: Some(e.line()),
                    column: Some(e.column()),
                    message: format!("invalid JSON: {}", strip_position(&e.to_string())),
                })
            })
            .ok()
            .map(|value| read(&source, text, value));
        return vec![Piece {
            marker: "",
            text,
            source,
            value,
        }];
    }
    let before = errors.len();
    let pieces = yaml_pieces(file, text, errors, read);
    // `{{ .Values.x }}` does not parse as YAML, once per template expression: one error that
    // says what the file is says more than a dozen about its syntax.
    if errors.len() > before && text.contains("{{") && text.contains("}}") {
        errors.truncate(before + 1);
        errors[before].column = None;
        errors[before].message = "this looks like an unrendered Helm template; render it first: \
                                  helm template <release> <chart> | stsguard audit -f -"
            .to_owned();
    }
    pieces
}

/// Scalars as the API server's own YAML reader (sigs.k8s.io/yaml, YAML 1.1 scalars) reads them:
/// `defaultMode: 0644` is the octal 420, as kubectl sends it. By YAML 1.2 rules it would be the
/// decimal 644 (read as a float, which no integer field takes).
fn yaml_options() -> serde_saphyr::Options {
    serde_saphyr::options! { legacy_octal_numbers: true }
}

fn yaml_pieces<'a, T: Send>(
    file: &str,
    text: &'a str,
    errors: &mut Vec<InputError>,
    read: impl Fn(&Source, &str, Value) -> T + Sync,
) -> Vec<Piece<'a, T>> {
    let source = |line| Source {
        file: file.to_owned(),
        line,
    };
    let chunks = split_documents(text);
    let parsed = crate::parallel::map(&chunks, |chunk| {
        let first = first_content_line(chunk.text)?;
        // Most documents take the fast path; the rest, and every error, are serde-saphyr's.
        let parsed = match fast_yaml::parse(chunk.text).map_or_else(
            || serde_saphyr::from_str_with_options::<Value>(chunk.text, yaml_options()),
            Ok,
        ) {
            Ok(Value::Null) => Ok(None),
            Ok(value) => Ok(Some(read(
                &source(chunk.line + first + 1),
                chunk.text,
                value,
            ))),
            Err(e) => Err(e),
        };
        Some((first, parsed))
    });
    let mut pieces = Vec::with_capacity(chunks.len());
    for (chunk, parsed) in chunks.into_iter().zip(parsed) {
        let mut piece = Piece {
            marker: chunk.marker,
            text: chunk.text,
            source: source(chunk.line + 1),
            value: None,
        };
        if let Some((first, parsed)) = parsed {
            piece.source.line = chunk.line + first + 1;
            match parsed {
                Ok(value) => piece.value = value,
                Err(e) => {
                    let (line, column) = e
                        .location()
                        .map(|l| (l.line() as usize, l.column() as usize))
                        .unwrap_or((first + 1, 0));
                    let message = yaml_message(&e.to_string());
                    // The parser notices an unclosed `[` or `{` where the next thing does not
                    // fit, often lines later: point at the bracket instead.
                    let error = match unclosed(chunk.text, line) {
                        Some((open_line, open_column, bracket)) => InputError {
                            file: file.to_owned(),
                            line: Some(chunk.line + open_line),
                            column: Some(open_column),
                            message: format!(
                                "invalid YAML: this {bracket:?} is never closed (the parser \
                                 stopped at line {}: {message})",
                                chunk.line + line
                            ),
                        },
                        None => InputError {
                            file: file.to_owned(),
                            line: Some(chunk.line + line),
                            column: Some(column).filter(|c| *c > 0),
                            message: format!("invalid YAML: {message}"),
                        },
                    };
                    errors.push(error);
                }
            }
        }
        pieces.push(piece);
    }
    pieces
}

/// Adds a document, or each item of a `kind: List`.
fn push_value(loaded: &mut Loaded, source: Source, text: &str, mut value: Value) {
    if is_list(&value)
        && let Some(Value::Array(items)) = value.get_mut("items").map(Value::take)
    {
        for item in items {
            loaded.documents.push(Document {
                source: source.clone(),
                text: String::new(),
                value: item,
            });
        }
        return;
    }
    loaded.documents.push(Document {
        source,
        text: text.to_owned(),
        value,
    });
}

/// The values of a document: the items of a `kind: List`, or the document itself.
pub fn items(value: &Value) -> Vec<&Value> {
    match value.get("items") {
        Some(Value::Array(items)) if is_list(value) => items.iter().collect(),
        _ => vec![value],
    }
}

pub(crate) fn is_list(value: &Value) -> bool {
    value
        .get("kind")
        .and_then(Value::as_str)
        .is_some_and(|k| k.ends_with("List"))
        && value.get("items").is_some_and(Value::is_array)
}

#[cfg(test)]
mod tests;
