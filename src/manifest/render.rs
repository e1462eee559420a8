//! Writing an input's documents back with some of them changed: the changed ones as YAML, after
//! the comments that led them, everything else byte for byte (`stsguard mutate`).

use serde_json::Value;

use super::{InputError, Piece, Source, first_content_line, is_list};

/// A document `render` changed: where it is, and its value before and after.
#[derive(Debug)]
pub struct Rewrite {
    pub source: Source,
    pub before: Value,
    pub after: Value,
}

/// Writes an input's documents back with `change` applied (called for each document, and for
/// each item of a `kind: List`; it returns whether it changed the value). Changed documents are
/// written as YAML after the comments that led them (a `# Source:` line, say); everything else,
/// comments and markers included, is kept byte for byte.
pub fn render(
    pieces: &[Piece],
    mut change: impl FnMut(&Source, &mut Value) -> bool,
) -> Result<(String, Vec<Rewrite>), InputError> {
    let mut out = String::new();
    let mut rewrites = Vec::new();
    for piece in pieces {
        let Some(original) = &piece.value else {
            out.push_str(piece.marker);
            out.push_str(piece.text);
            continue;
        };
        let mut value = original.clone();
        let changed = match value.get_mut("items").filter(|_| is_list(original)) {
            Some(Value::Array(items)) => items
                .iter_mut()
                .fold(false, |acc, item| change(&piece.source, item) | acc),
            _ => change(&piece.source, &mut value),
        };
        if !changed {
            out.push_str(piece.marker);
            out.push_str(piece.text);
            continue;
        }
        let yaml = serde_saphyr::to_string(&value).map_err(|e| InputError {
            file: piece.source.file.clone(),
            line: Some(piece.source.line),
            column: None,
            message: format!("cannot write the changed document as YAML: {e}"),
        })?;
        out.push_str(if piece.marker.ends_with('\n') || piece.marker.is_empty() {
            piece.marker
        } else {
            "---\n"
        });
        out.push_str(leading_comments(piece.text));
        out.push_str(&yaml);
        rewrites.push(Rewrite {
            source: piece.source.clone(),
            before: original.clone(),
            after: value,
        });
    }
    Ok((out, rewrites))
}

/// The blank and comment lines before a document's first content line.
fn leading_comments(text: &str) -> &str {
    let first = first_content_line(text).unwrap_or(0);
    let end: usize = text.split_inclusive('\n').take(first).map(str::len).sum();
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::pieces;

    fn rewrite(
        file: &str,
        text: &str,
        _json: bool,
        change: impl FnMut(&Source, &mut Value) -> bool,
    ) -> Result<(String, Vec<Rewrite>), Vec<InputError>> {
        let mut errors = Vec::new();
        let pieces = pieces(file, text, false, &mut errors);
        if !errors.is_empty() {
            return Err(errors);
        }
        render(&pieces, change).map_err(|e| vec![e])
    }

    #[test]
    fn a_changed_document_keeps_the_comments_that_lead_it() {
        let text = "kind: A\n---\n# Source: chart/templates/sts.yaml\nkind: B  # gone\n";
        let (out, _) = rewrite("in.yaml", text, false, |_, v| {
            v["x"] = serde_json::json!(1);
            v["kind"] == "B"
        })
        .unwrap();
        assert_eq!(
            out,
            "kind: A\n---\n# Source: chart/templates/sts.yaml\nkind: B\nx: 1\n"
        );
    }

    #[test]
    fn rewrite_keeps_untouched_documents_byte_for_byte() {
        let text =
            "# Source: a.yaml\nkind: A  # keep\n--- # marker comment\nkind: B\nx:   1\n---\n\n";
        let (out, rewrites) = rewrite("in.yaml", text, false, |_, v| {
            if v["kind"] == "B" {
                v["x"] = serde_json::json!(2);
                true
            } else {
                false
            }
        })
        .unwrap();
        assert_eq!(
            out,
            "# Source: a.yaml\nkind: A  # keep\n--- # marker comment\nkind: B\nx: 2\n---\n\n"
        );
        assert_eq!(rewrites.len(), 1);
        assert_eq!(rewrites[0].source.line, 4);
        let unchanged = rewrite("in.yaml", text, false, |_, _| false).unwrap().0;
        assert_eq!(unchanged, text);
    }

    #[test]
    fn rewrite_changes_list_items_and_refuses_bad_input() {
        let text = "kind: List\nitems:\n- kind: A\n- kind: B\n";
        let (out, _) = rewrite("l.yaml", text, false, |_, v| {
            v["seen"] = serde_json::json!(true);
            true
        })
        .unwrap();
        assert!(out.contains("- kind: A\n  seen: true"), "{out}");
        let errors =
            rewrite("bad.yaml", "kind: A\n---\nkind: [\n", false, |_, _| false).unwrap_err();
        assert_eq!(errors[0].line, Some(3));
    }
}
