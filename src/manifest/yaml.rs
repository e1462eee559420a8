//! The YAML text of a manifest as lines: documents split at their markers, where content starts,
//! an unclosed flow bracket, and the parser's messages without their positions.

/// A YAML document's text, the marker before it (`---` line, empty for the first document), and
/// the line (0-based) its text starts on.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Chunk<'a> {
    pub marker: &'a str,
    pub line: usize,
    pub text: &'a str,
}

/// Splits a YAML stream at `---` document markers (at column 0; inside block scalars they would
/// be indented) and `...` end markers.
pub(super) fn split_documents(text: &str) -> Vec<Chunk<'_>> {
    let mut chunks = Vec::new();
    let mut marker = "";
    let mut start = 0;
    let mut start_line = 0;
    let mut offset = 0;
    for (number, line) in text.split_inclusive('\n').enumerate() {
        let bare = line.trim_end_matches(['\n', '\r']);
        let is_start = bare == "---" || bare.starts_with("--- ") || bare.starts_with("---\t");
        let is_end = bare == "..." || bare.starts_with("... ");
        if is_start || is_end {
            chunks.push(Chunk {
                marker,
                line: start_line,
                text: &text[start..offset],
            });
            let content = if is_start { bare[3..].trim() } else { "" };
            // `--- value` starts a document on the marker line itself.
            if content.is_empty() || content.starts_with('#') {
                marker = &text[offset..offset + line.len()];
                start = offset + line.len();
                start_line = number + 1;
            } else {
                marker = &text[offset..offset + 4];
                start = offset + 4;
                start_line = number;
            }
        }
        offset += line.len();
    }
    chunks.push(Chunk {
        marker,
        line: start_line,
        text: &text[start..],
    });
    chunks
}

/// The 0-based index of the first line that is neither blank nor a comment.
pub(super) fn first_content_line(text: &str) -> Option<usize> {
    text.lines().position(|l| {
        let t = l.trim();
        !t.is_empty() && !t.starts_with('#')
    })
}

/// A flow collection (`[` or `{`) opened on a line before `error_line` (1-based) and still open
/// there: its line and column (1-based) and the bracket. Quotes and comments are skipped.
pub(super) fn unclosed(text: &str, error_line: usize) -> Option<(usize, usize, char)> {
    let mut open: Vec<(usize, usize, char)> = Vec::new();
    for (number, line) in text.lines().enumerate().take(error_line.saturating_sub(1)) {
        let mut quote: Option<char> = None;
        let mut previous = ' ';
        for (column, c) in line.chars().enumerate() {
            match (quote, c) {
                (Some(q), _) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '"' | '\'') => quote = Some(c),
                (None, '#') if previous.is_whitespace() => break,
                (None, '[' | '{') => open.push((number + 1, column + 1, c)),
                (None, ']' | '}') => {
                    open.pop();
                }
                _ => {}
            }
            previous = c;
        }
    }
    open.first().copied()
}

/// The first line of a serde-saphyr error without its `error: line N column M:` prefix (the
/// position is reported separately, relative to the file).
pub(crate) fn yaml_message(display: &str) -> String {
    let first = display.lines().next().unwrap_or(display);
    let first = first.strip_prefix("error: ").unwrap_or(first);
    match first.find("column ") {
        Some(at) if first.starts_with("line ") => first[at..]
            .split_once(": ")
            .map_or(first, |(_, rest)| rest)
            .to_owned(),
        _ => first.to_owned(),
    }
}

pub(super) fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_owned(),
        None => message.to_owned(),
    }
}
