//! Where a field is written in a YAML document, so that an error about `spec.replicas` points at
//! the line of `replicas:` rather than at the document's first line.

/// One step of a field path: a key, or an index into a list.
#[derive(Debug, PartialEq)]
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

fn steps(path: &str) -> Vec<Step<'_>> {
    let mut steps = Vec::new();
    for part in path.split('.') {
        let (key, mut rest) = part.split_once('[').map_or((part, ""), |(k, r)| (k, r));
        if !key.is_empty() {
            steps.push(Step::Key(key));
        }
        while let Some((index, after)) = rest.split_once(']') {
            if let Ok(i) = index.parse() {
                steps.push(Step::Index(i));
            }
            rest = after.strip_prefix('[').unwrap_or(after);
        }
    }
    steps
}

/// A line's indentation and its content, a list item's `- ` counted as indentation.
fn shape(line: &str) -> Option<(usize, bool, &str)> {
    let content = line.trim_start_matches(' ');
    if content.is_empty() || content.starts_with('#') {
        return None;
    }
    let indent = line.len() - content.len();
    match content.strip_prefix("- ") {
        Some(item) => Some((indent + 2, true, item.trim_start_matches(' '))),
        None => Some((indent, false, content)),
    }
}

fn is_key(content: &str, key: &str) -> bool {
    [key.to_owned(), format!("\"{key}\""), format!("'{key}'")]
        .iter()
        .any(|k| {
            content
                .strip_prefix(k.as_str())
                .is_some_and(|r| r.starts_with(':'))
        })
}

/// The 0-based line of `text` where the field at `path` (`spec.template.spec.containers[0].image`,
/// as serde reports it) is written, following block-style indentation; where the rest cannot be
/// told (flow style), the deepest line that can; `None` when not even the first key can (JSON).
pub fn locate(text: &str, path: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let mut from = 0;
    // Fields of the current mapping are indented deeper than this.
    let mut parent: isize = -1;
    let mut found = None;
    for step in steps(path) {
        match step {
            Step::Key(key) => {
                let mut hit = None;
                for (i, line) in lines.iter().enumerate().skip(from) {
                    let Some((indent, item, content)) = shape(line) else {
                        continue;
                    };
                    // Leaving the parent mapping ends the search (a list item's first key sits
                    // on the item's own line, past the `- `).
                    if (indent as isize) <= parent && !(item && i == from) {
                        break;
                    }
                    if (indent as isize) > parent && is_key(content, key) {
                        hit = Some((i, indent));
                        break;
                    }
                }
                let Some((line, indent)) = hit else {
                    return found;
                };
                found = Some(line);
                from = line + 1;
                parent = indent as isize;
            }
            Step::Index(n) => {
                let mut items = 0;
                let mut item_indent = None;
                let mut hit = None;
                for (i, line) in lines.iter().enumerate().skip(from) {
                    let Some((indent, item, _)) = shape(line) else {
                        continue;
                    };
                    // Block sequences may sit at their key's own indentation.
                    let dash = indent as isize - 2;
                    if item && dash >= parent {
                        // Items of lists nested in an item are not this list's.
                        if *item_indent.get_or_insert(indent) != indent {
                            continue;
                        }
                        if items == n {
                            hit = Some((i, indent));
                            break;
                        }
                        items += 1;
                    } else if (indent as isize) <= parent || item {
                        break;
                    }
                }
                let Some((line, indent)) = hit else {
                    return found;
                };
                found = Some(line);
                from = line;
                parent = indent as isize - 1;
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const STS: &str = "\
# leading comment
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: web
spec:
  serviceName: web
  replicas: three
  template:
    spec:
      containers:
        - name: a
          image: one
        - name: b
          image: 2
          ports:
          - containerPort: x
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      resources: {requests: {storage: lots}}
";

    #[test]
    fn fields_are_found_by_indentation() {
        assert_eq!(locate(STS, "spec.replicas"), Some(7));
        assert_eq!(
            locate(STS, "spec.template.spec.containers[1].image"),
            Some(14)
        );
        assert_eq!(
            locate(STS, "spec.template.spec.containers[0].name"),
            Some(11)
        );
        assert_eq!(
            locate(
                STS,
                "spec.template.spec.containers[1].ports[0].containerPort"
            ),
            Some(16)
        );
        assert_eq!(locate(STS, "spec.volumeClaimTemplates[0].spec"), Some(19));
        // Inside flow style: the deepest line that can be told.
        assert_eq!(
            locate(
                STS,
                "spec.volumeClaimTemplates[0].spec.resources.requests.storage"
            ),
            Some(20)
        );
        assert_eq!(locate(STS, "metadata.labels"), Some(3));
        assert_eq!(
            locate("{\"spec\": {\"replicas\": \"x\"}}", "spec.replicas"),
            None
        );
    }
}
