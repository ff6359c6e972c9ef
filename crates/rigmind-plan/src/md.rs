//! A small tree over pulldown-cmark's event stream, plus raw-source helpers.

use std::ops::Range;

use pulldown_cmark::{CodeBlockKind, Event, Options, Parser, Tag};

/// One event: a container (`Start` … `End`) with its children, or a leaf.
pub(crate) struct Node<'a> {
    pub ev: Event<'a>,
    pub range: Range<usize>,
    pub children: Vec<Node<'a>>,
}

/// The top-level blocks of a CommonMark document.
pub(crate) fn tree(text: &str) -> Vec<Node<'_>> {
    let mut stack: Vec<Node<'_>> = vec![Node {
        ev: Event::Rule,
        range: 0..text.len(),
        children: Vec::new(),
    }];
    for (ev, range) in Parser::new_ext(text, Options::empty()).into_offset_iter() {
        match ev {
            Event::Start(_) => stack.push(Node {
                ev,
                range,
                children: Vec::new(),
            }),
            Event::End(_) => {
                if stack.len() > 1 {
                    let node = stack.pop().expect("stack has a root");
                    stack
                        .last_mut()
                        .expect("stack has a root")
                        .children
                        .push(node);
                }
            }
            _ => stack
                .last_mut()
                .expect("stack has a root")
                .children
                .push(Node {
                    ev,
                    range,
                    children: Vec::new(),
                }),
        }
    }
    while stack.len() > 1 {
        let node = stack.pop().expect("checked");
        stack.last_mut().expect("checked").children.push(node);
    }
    stack.pop().map(|root| root.children).unwrap_or_default()
}

impl Node<'_> {
    /// True for block-level nodes (paragraphs, lists, code blocks, headings …).
    pub fn is_block(&self) -> bool {
        match &self.ev {
            Event::Start(tag) => !matches!(
                tag,
                Tag::Emphasis
                    | Tag::Strong
                    | Tag::Strikethrough
                    | Tag::Superscript
                    | Tag::Subscript
                    | Tag::Link { .. }
                    | Tag::Image { .. }
            ),
            Event::Rule | Event::Html(_) => true,
            _ => false,
        }
    }

    /// The heading level, for a heading.
    pub fn heading_level(&self) -> Option<u8> {
        match &self.ev {
            Event::Start(Tag::Heading { level, .. }) => Some(*level as u8),
            _ => None,
        }
    }

    pub fn is_bullet_list(&self) -> bool {
        matches!(self.ev, Event::Start(Tag::List(None)))
    }

    pub fn is_list(&self) -> bool {
        matches!(self.ev, Event::Start(Tag::List(_)))
    }

    pub fn is_item(&self) -> bool {
        matches!(self.ev, Event::Start(Tag::Item))
    }

    pub fn is_fenced_code(&self) -> bool {
        matches!(
            self.ev,
            Event::Start(Tag::CodeBlock(CodeBlockKind::Fenced(_)))
        )
    }

    /// The text of a code block, minus its final newline.
    pub fn code_text(&self) -> String {
        let mut out = String::new();
        for c in &self.children {
            if let Event::Text(t) = &c.ev {
                out.push_str(t);
            }
        }
        if out.ends_with('\n') {
            out.pop();
        }
        out
    }

    /// Source range of a list item's first paragraph (tight or loose lists), and the
    /// number of leading children it spans.
    pub fn first_paragraph(&self) -> Option<(Range<usize>, usize)> {
        let first = self.children.first()?;
        if matches!(first.ev, Event::Start(Tag::Paragraph)) {
            let r = first
                .children
                .iter()
                .map(|c| c.range.clone())
                .reduce(|a, b| a.start.min(b.start)..a.end.max(b.end))
                .unwrap_or(first.range.clone());
            return Some((r, 1));
        }
        let inline: Vec<&Node<'_>> = self.children.iter().take_while(|c| !c.is_block()).collect();
        let r = inline
            .iter()
            .map(|c| c.range.clone())
            .reduce(|a, b| a.start.min(b.start)..a.end.max(b.end))?;
        Some((r, inline.len()))
    }
}

/// Maps byte offsets to 1-based line numbers.
pub(crate) struct Lines {
    starts: Vec<usize>,
}

impl Lines {
    pub fn new(text: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(
            text.bytes()
                .enumerate()
                .filter(|(_, b)| *b == b'\n')
                .map(|(i, _)| i + 1),
        );
        Self { starts }
    }

    pub fn line(&self, offset: usize) -> usize {
        self.starts.partition_point(|&s| s <= offset).max(1)
    }
}

/// Each line trimmed, joined with `\n`, the whole trimmed.
pub(crate) fn join_trimmed(raw: &str) -> String {
    raw.lines()
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("\n")
        .trim()
        .to_string()
}

/// The content of `s` when it is exactly one inline code span (CommonMark rules).
pub(crate) fn unwrap_code(s: &str) -> Option<String> {
    let n = s.bytes().take_while(|&b| b == b'`').count();
    let m = s.bytes().rev().take_while(|&b| b == b'`').count();
    if n == 0 || m != n || s.len() <= 2 * n {
        return None;
    }
    let inner = &s[n..s.len() - n];
    // A run of exactly n backticks inside would close the span early.
    let bytes = inner.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'`' {
            let start = i;
            while i < bytes.len() && bytes[i] == b'`' {
                i += 1;
            }
            if i - start == n {
                return None;
            }
        } else {
            i += 1;
        }
    }
    let inner = inner.replace('\n', " ");
    if inner.len() >= 2
        && inner.starts_with(' ')
        && inner.ends_with(' ')
        && inner.bytes().any(|b| b != b' ')
    {
        Some(inner[1..inner.len() - 1].to_string())
    } else {
        Some(inner)
    }
}

/// The text of an ATX or setext heading, from its raw source.
pub(crate) fn heading_text(raw: &str) -> String {
    let t = raw.trim();
    if t.starts_with('#') {
        let line = t.lines().next().unwrap_or("");
        let s = line.trim_start_matches('#').trim();
        let stripped = s.trim_end_matches('#');
        if stripped.len() < s.len() && (stripped.is_empty() || stripped.ends_with([' ', '\t'])) {
            stripped.trim().to_string()
        } else {
            s.to_string()
        }
    } else {
        let mut lines: Vec<&str> = t.lines().map(str::trim).collect();
        if lines.len() > 1
            && lines
                .last()
                .is_some_and(|l| !l.is_empty() && l.chars().all(|c| c == '=' || c == '-'))
        {
            lines.pop();
        }
        lines.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_spans() {
        assert_eq!(unwrap_code("`ls`").as_deref(), Some("ls"));
        assert_eq!(unwrap_code("`` a ` b ``").as_deref(), Some("a ` b"));
        assert_eq!(unwrap_code("`a` and `b`"), None);
        assert_eq!(unwrap_code("``"), None);
        assert_eq!(unwrap_code("plain"), None);
        assert_eq!(unwrap_code("` `").as_deref(), Some(" "));
    }

    #[test]
    fn headings() {
        assert_eq!(heading_text("## Task: x ##\n"), "Task: x");
        assert_eq!(heading_text("# a#b\n"), "a#b");
        assert_eq!(heading_text("Title\n=====\n"), "Title");
    }

    #[test]
    fn lines() {
        let l = Lines::new("a\nbc\n\nd");
        assert_eq!(l.line(0), 1);
        assert_eq!(l.line(2), 2);
        assert_eq!(l.line(5), 3);
        assert_eq!(l.line(6), 4);
    }
}
