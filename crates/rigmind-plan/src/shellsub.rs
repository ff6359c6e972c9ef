//! `{item}`, `{stem}` and `{index}` in a fanned-out task's `command`.
//!
//! The command runs as `bash -c`, and an item is a file name that anyone who can
//! write into the globbed folder chooses. Pasting it into the command would run
//! `x"; rm -rf ~; ".txt` as code. So in a command the placeholders become
//! references to environment variables (`RIGMIND_ITEM`, `RIGMIND_STEM`, which the
//! executor sets), quoted for the shell context at that spot: an expansion result is
//! never parsed again by bash, whatever it holds. `{index}` is a number and is
//! written as is. This module owns the scan of the command template (quotes,
//! escapes, `$(...)`, backticks, comments, heredocs) that picks the context.
//!
//! Other fields (prompt, output, env values...) are data, not shell; they keep the
//! plain textual substitution of `expand`.

use rigmind_types::{INDEX_ENV as INDEX_VAR, ITEM_ENV as ITEM_VAR, STEM_ENV as STEM_VAR};

/// A command with its placeholders resolved once per plan task; [`render`] fills
/// in the index per item (the variable references are the same for every item).
///
/// [`render`]: CommandTemplate::render
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CommandTemplate {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Index,
}

impl CommandTemplate {
    /// Scans `command` once; `Err` holds a message for the plan author (without
    /// the file and line, which the caller adds).
    pub(crate) fn compile(command: &str) -> Result<Self, String> {
        let mut s = Scanner {
            src: command.as_bytes(),
            i: 0,
            stack: vec![Ctx::Top],
            heredocs: Vec::new(),
            parts: Vec::new(),
            text: Vec::new(),
        };
        s.run()?;
        s.flush();
        Ok(Self { parts: s.parts })
    }

    /// The command for the item at `index`.
    pub(crate) fn render(&self, index: usize) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Index => out.push_str(&index.to_string()),
            }
        }
        out
    }
}

/// Rewrites `command` for the item at `index` (a convenience for tests and
/// one-off callers; `expand` compiles once per plan task).
#[cfg(test)]
pub(crate) fn rewrite(command: &str, index: usize) -> Result<String, String> {
    CommandTemplate::compile(command).map(|t| t.render(index))
}

/// The shell's quoting context at a spot of the command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ctx {
    /// Outside any quotes, at the top level.
    Top,
    /// Inside `$(...)` or `(...)`; `arith` for `$((...))` / `((...))`, where `<<`
    /// is a shift and not a heredoc.
    Paren { arith: bool },
    /// Inside backticks.
    Backtick,
    /// Inside `"..."`.
    Dq,
    /// Inside `'...'`.
    Sq,
    /// Inside `$'...'`.
    AnsiC,
}

impl Ctx {
    /// Contexts where bash reads words as at the top level.
    fn unquoted(self) -> bool {
        matches!(self, Ctx::Top | Ctx::Paren { .. } | Ctx::Backtick)
    }
}

/// A heredoc whose body starts at the next newline.
struct Heredoc {
    delimiter: Vec<u8>,
    /// `<<'EOF'` or `<<"EOF"`: its body is not expanded.
    quoted: bool,
    /// `<<-EOF`: leading tabs are stripped before the delimiter is compared.
    strip_tabs: bool,
}

#[derive(Clone, Copy)]
enum Placeholder {
    Item,
    Stem,
    Index,
}

impl Placeholder {
    fn at(rest: &[u8]) -> Option<(Self, usize)> {
        [
            (&b"{item}"[..], Placeholder::Item),
            (b"{stem}", Placeholder::Stem),
            (b"{index}", Placeholder::Index),
        ]
        .into_iter()
        .find(|(p, _)| rest.starts_with(p))
        .map(|(p, ph)| (ph, p.len()))
    }

    fn name(self) -> &'static str {
        match self {
            Placeholder::Item => "{item}",
            Placeholder::Stem => "{stem}",
            Placeholder::Index => "{index}",
        }
    }

    fn var(self) -> &'static str {
        match self {
            Placeholder::Item => ITEM_VAR,
            Placeholder::Stem => STEM_VAR,
            Placeholder::Index => INDEX_VAR,
        }
    }
}

struct Scanner<'a> {
    src: &'a [u8],
    i: usize,
    stack: Vec<Ctx>,
    heredocs: Vec<Heredoc>,
    parts: Vec<Part>,
    /// Text not yet pushed to `parts` (whole UTF-8 sequences of the input plus
    /// ASCII we add, so it is always valid UTF-8 at a flush).
    text: Vec<u8>,
}

impl Scanner<'_> {
    fn ctx(&self) -> Ctx {
        *self.stack.last().expect("the top context is never popped")
    }

    fn peek(&self, off: usize) -> Option<u8> {
        self.src.get(self.i + off).copied()
    }

    fn rest(&self) -> &[u8] {
        &self.src[self.i..]
    }

    /// Copies `n` input bytes as they are.
    fn copy(&mut self, n: usize) {
        let end = (self.i + n).min(self.src.len());
        self.text.extend_from_slice(&self.src[self.i..end]);
        self.i = end;
    }

    fn emit(&mut self, s: &str) {
        self.text.extend_from_slice(s.as_bytes());
    }

    fn flush(&mut self) {
        if !self.text.is_empty() {
            let t = std::mem::take(&mut self.text);
            self.parts.push(Part::Text(
                String::from_utf8(t).expect("split only at ASCII bytes"),
            ));
        }
    }

    fn run(&mut self) -> Result<(), String> {
        while self.i < self.src.len() {
            match self.ctx() {
                c if c.unquoted() => self.step_unquoted(c)?,
                Ctx::Dq => self.step_dq()?,
                Ctx::Sq => self.step_sq()?,
                _ => self.step_ansi_c()?,
            }
        }
        // An unterminated heredoc or quote is bash's to report.
        Ok(())
    }

    /// Writes the reference for a placeholder at `self.i` (if there is one), as
    /// `shape` wants it: `None` when no placeholder starts here.
    fn placeholder(&mut self, shape: fn(&str) -> String) -> Result<Option<()>, String> {
        let Some((ph, len)) = Placeholder::at(self.rest()) else {
            return Ok(None);
        };
        if self.i > 0 && self.src[self.i - 1] == b'$' {
            return Err(format!(
                "'${}' in the command is ambiguous: write {} for the for_each value, \
                 or ${} (without braces) for a shell variable",
                ph.name(),
                ph.name(),
                &ph.name()[1..ph.name().len() - 1]
            ));
        }
        self.i += len;
        match ph {
            Placeholder::Index => {
                self.flush();
                self.parts.push(Part::Index);
            }
            _ => {
                let r = shape(ph.var());
                self.emit(&r);
            }
        }
        Ok(Some(()))
    }

    fn step_unquoted(&mut self, ctx: Ctx) -> Result<(), String> {
        let b = self.src[self.i];
        let arith = matches!(ctx, Ctx::Paren { arith: true });
        match b {
            b'\\' => self.copy(2),
            b'\'' => self.open(1, Ctx::Sq),
            b'"' => self.open(1, Ctx::Dq),
            b'$' if self.peek(1) == Some(b'\'') => self.open(2, Ctx::AnsiC),
            b'$' if self.peek(1) == Some(b'"') => self.open(2, Ctx::Dq),
            b'$' if self.rest().starts_with(b"$((") => self.open_arith(3),
            b'$' if self.peek(1) == Some(b'(') => self.open(2, Ctx::Paren { arith: false }),
            b'(' if self.peek(1) == Some(b'(') => self.open_arith(2),
            b'(' => self.open(1, Ctx::Paren { arith }),
            b')' if matches!(ctx, Ctx::Paren { .. }) => self.close(),
            b'`' if ctx == Ctx::Backtick => self.close(),
            b'`' => self.open(1, Ctx::Backtick),
            b'#' if self.at_word_start() => self.skip_comment(),
            b'<' if !arith && self.rest().starts_with(b"<<<") => self.copy(3),
            b'<' if !arith && self.rest().starts_with(b"<<") => self.heredoc_operator(),
            b'\n' if !self.heredocs.is_empty() => {
                self.copy(1);
                self.heredoc_bodies()?;
            }
            b'{' => {
                if self.placeholder(|v| format!("\"${{{v}}}\""))?.is_none() {
                    self.copy(1);
                }
            }
            _ => self.copy(1),
        }
        Ok(())
    }

    fn step_dq(&mut self) -> Result<(), String> {
        match self.src[self.i] {
            b'\\' => match self.peek(1) {
                Some(b'$' | b'`' | b'"' | b'\\' | b'\n') => self.copy(2),
                // A backslash that bash keeps literally: keep it literal before the
                // `$` of our reference too.
                _ if Placeholder::at(&self.rest()[1..]).is_some() => {
                    self.i += 1;
                    self.emit("\\\\");
                }
                _ => self.copy(1),
            },
            b'"' => self.close(),
            b'$' if self.rest().starts_with(b"$((") => self.open_arith(3),
            b'$' if self.peek(1) == Some(b'(') => self.open(2, Ctx::Paren { arith: false }),
            b'`' => self.open(1, Ctx::Backtick),
            b'{' => {
                if self.placeholder(|v| format!("${{{v}}}"))?.is_none() {
                    self.copy(1);
                }
            }
            _ => self.copy(1),
        }
        Ok(())
    }

    fn step_sq(&mut self) -> Result<(), String> {
        match self.src[self.i] {
            b'\'' => self.close(),
            // Close the quotes, expand inside double quotes, reopen.
            b'{' => {
                if self.placeholder(|v| format!("'\"${{{v}}}\"'"))?.is_none() {
                    self.copy(1);
                }
            }
            _ => self.copy(1),
        }
        Ok(())
    }

    fn step_ansi_c(&mut self) -> Result<(), String> {
        match self.src[self.i] {
            b'\\' if Placeholder::at(&self.rest()[1..]).is_some() => {
                self.i += 1;
                self.emit("\\\\");
            }
            b'\\' => self.copy(2),
            b'\'' => self.close(),
            b'{' => {
                if self.placeholder(|v| format!("'\"${{{v}}}\"$'"))?.is_none() {
                    self.copy(1);
                }
            }
            _ => self.copy(1),
        }
        Ok(())
    }

    fn open(&mut self, n: usize, ctx: Ctx) {
        self.copy(n);
        self.stack.push(ctx);
    }

    fn open_arith(&mut self, n: usize) {
        self.copy(n);
        self.stack.push(Ctx::Paren { arith: true });
        self.stack.push(Ctx::Paren { arith: true });
    }

    fn close(&mut self) {
        self.copy(1);
        if self.stack.len() > 1 {
            self.stack.pop();
        }
    }

    /// Whether a `#` here starts a comment (it begins a word).
    fn at_word_start(&self) -> bool {
        self.i == 0
            || matches!(
                self.src[self.i - 1],
                b' ' | b'\t' | b'\n' | b';' | b'&' | b'|' | b'(' | b')'
            )
    }

    /// Copies a comment up to (not including) its newline, placeholders and all.
    fn skip_comment(&mut self) {
        let len = self.rest().iter().position(|&b| b == b'\n');
        self.copy(len.unwrap_or(self.src.len() - self.i));
    }

    /// `<<WORD` or `<<-WORD`: notes the heredoc whose body follows the next newline.
    fn heredoc_operator(&mut self) {
        self.copy(2);
        let strip_tabs = self.peek(0) == Some(b'-');
        if strip_tabs {
            self.copy(1);
        }
        while matches!(self.peek(0), Some(b' ' | b'\t')) {
            self.copy(1);
        }
        let mut delimiter = Vec::new();
        let mut quoted = false;
        while let Some(b) = self.peek(0) {
            match b {
                b' ' | b'\t' | b'\n' | b';' | b'&' | b'|' | b'<' | b'>' | b'(' | b')' => break,
                b'\'' | b'"' => {
                    quoted = true;
                    let len = self.rest()[1..].iter().position(|&c| c == b);
                    let end = len.map_or(self.src.len(), |l| self.i + 1 + l);
                    delimiter.extend_from_slice(&self.src[self.i + 1..end]);
                    self.copy(end + 1 - self.i);
                }
                b'\\' => {
                    quoted = true;
                    delimiter.extend(self.peek(1));
                    self.copy(2);
                }
                _ => {
                    delimiter.push(b);
                    self.copy(1);
                }
            }
        }
        if !delimiter.is_empty() {
            self.heredocs.push(Heredoc {
                delimiter,
                quoted,
                strip_tabs,
            });
        }
    }

    /// The bodies of the pending heredocs, which start here (after a newline).
    fn heredoc_bodies(&mut self) -> Result<(), String> {
        let src = self.src;
        for doc in std::mem::take(&mut self.heredocs) {
            while self.i < src.len() {
                let len = src[self.i..].iter().position(|&b| b == b'\n');
                let end = len.map_or(src.len(), |l| self.i + l);
                let line = &src[self.i..end];
                let bare = if doc.strip_tabs {
                    let tabs = line.iter().take_while(|&&b| b == b'\t').count();
                    &line[tabs..]
                } else {
                    line
                };
                if bare == doc.delimiter.as_slice() {
                    self.copy(end + 1 - self.i);
                    break;
                }
                self.heredoc_line(&doc, end)?;
                self.copy(1);
            }
        }
        Ok(())
    }

    /// One body line up to `end` (its newline or the end of the command).
    fn heredoc_line(&mut self, doc: &Heredoc, end: usize) -> Result<(), String> {
        while self.i < end {
            if doc.quoted {
                if let Some((ph, _)) = Placeholder::at(self.rest()) {
                    let delim = String::from_utf8_lossy(&doc.delimiter);
                    return Err(format!(
                        "{} in the body of a quoted heredoc (<<'{delim}') is never expanded by bash: \
                         use ${} there and unquote the delimiter (<<{delim}), or read ${} from the \
                         environment in the program that reads the heredoc",
                        ph.name(),
                        ph.var(),
                        ph.var()
                    ));
                }
                self.copy(1);
                continue;
            }
            match self.src[self.i] {
                b'\\' if Placeholder::at(&self.rest()[1..]).is_some() => {
                    self.i += 1;
                    self.emit("\\\\");
                }
                b'\\' if matches!(self.peek(1), Some(b'$' | b'`' | b'\\')) => self.copy(2),
                b'{' => {
                    if self.placeholder(|v| format!("${{{v}}}"))?.is_none() {
                        self.copy(1);
                    }
                }
                _ => self.copy(1),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rw(s: &str) -> String {
        rewrite(s, 7).unwrap()
    }

    #[test]
    fn each_quoting_context_gets_its_own_reference() {
        assert_eq!(rw("wc -c {item}"), r#"wc -c "${RIGMIND_ITEM}""#);
        assert_eq!(rw(r#"wc -c "{item}""#), r#"wc -c "${RIGMIND_ITEM}""#);
        assert_eq!(
            rw(r#"echo "in/{stem}.txt" x"#),
            r#"echo "in/${RIGMIND_STEM}.txt" x"#
        );
        assert_eq!(rw("echo '{item}'"), r#"echo ''"${RIGMIND_ITEM}"''"#);
        assert_eq!(rw("echo 'a {stem} b'"), r#"echo 'a '"${RIGMIND_STEM}"' b'"#);
        assert_eq!(
            rw(r"echo $'a\t{item}'"),
            r#"echo $'a\t'"${RIGMIND_ITEM}"$''"#
        );
        assert_eq!(rw(r#"echo $"{item}""#), r#"echo $"${RIGMIND_ITEM}""#);
    }

    #[test]
    fn index_is_written_as_a_number_everywhere() {
        assert_eq!(rw("echo {index} '{index}' \"{index}\""), "echo 7 '7' \"7\"");
        let t = CommandTemplate::compile("x{index}y{index}").unwrap();
        assert_eq!(t.render(0), "x0y0");
        assert_eq!(t.render(12), "x12y12");
    }

    #[test]
    fn substitutions_restart_the_context() {
        assert_eq!(
            rw("echo $(basename {item})"),
            r#"echo $(basename "${RIGMIND_ITEM}")"#
        );
        assert_eq!(
            rw(r#"echo "$(basename {item}) and {stem}""#),
            r#"echo "$(basename "${RIGMIND_ITEM}") and ${RIGMIND_STEM}""#
        );
        assert_eq!(
            rw("echo `basename {item}` {stem}"),
            r#"echo `basename "${RIGMIND_ITEM}"` "${RIGMIND_STEM}""#
        );
        assert_eq!(
            rw(r#"echo "`basename {item}`""#),
            r#"echo "`basename "${RIGMIND_ITEM}"`""#
        );
        assert_eq!(
            rw("(cd x && echo '{item}') ; {stem}"),
            r#"(cd x && echo ''"${RIGMIND_ITEM}"'') ; "${RIGMIND_STEM}""#
        );
        // Nested: quotes inside a substitution inside quotes.
        assert_eq!(
            rw(r#"echo "a $(echo "b '{item}'" '{stem}') c""#),
            r#"echo "a $(echo "b '${RIGMIND_ITEM}'" ''"${RIGMIND_STEM}"'') c""#
        );
        // A ')' inside quotes does not close the substitution.
        assert_eq!(
            rw(r#"echo $(echo ")" {item})"#),
            r#"echo $(echo ")" "${RIGMIND_ITEM}")"#
        );
    }

    #[test]
    fn escapes_are_respected() {
        // \" does not end a double-quoted string.
        assert_eq!(
            rw(r#"echo "a \" {item}""#),
            r#"echo "a \" ${RIGMIND_ITEM}""#
        );
        // \' outside quotes is a literal quote, not the start of a string.
        assert_eq!(rw(r"echo \' {item}"), r#"echo \' "${RIGMIND_ITEM}""#);
        // \{ outside quotes is a literal brace: the author wrote the text {item}.
        assert_eq!(rw(r"echo \{item}"), r"echo \{item}");
        // A literal backslash before a placeholder stays literal.
        assert_eq!(rw(r#"echo "a\{item}""#), r#"echo "a\\${RIGMIND_ITEM}""#);
        assert_eq!(rw(r"echo 'a\{item}'"), r#"echo 'a\'"${RIGMIND_ITEM}"''"#);
        assert_eq!(
            rw(r"echo $'\'{item}\\{stem}'"),
            r#"echo $'\''"${RIGMIND_ITEM}"$'\\'"${RIGMIND_STEM}"$''"#
        );
        assert_eq!(
            rw(r"echo $'a\{item}'"),
            r#"echo $'a\\'"${RIGMIND_ITEM}"$''"#
        );
    }

    #[test]
    fn unquoted_heredocs_expand_and_quoted_ones_are_refused() {
        assert_eq!(
            rw("cat <<EOF > out\nname: {item} '{stem}' \"x\"\nEOF\necho {item}"),
            "cat <<EOF > out\nname: ${RIGMIND_ITEM} '${RIGMIND_STEM}' \"x\"\nEOF\necho \"${RIGMIND_ITEM}\""
        );
        assert_eq!(
            rw("cat <<-END\n\t{item}\n\tEND\n'{stem}'"),
            "cat <<-END\n\t${RIGMIND_ITEM}\n\tEND\n''\"${RIGMIND_STEM}\"''"
        );
        // Two heredocs on one line, the second unquoted.
        assert_eq!(
            rw("cat <<'A' <<B\nx\nA\n{item}\nB\n"),
            "cat <<'A' <<B\nx\nA\n${RIGMIND_ITEM}\nB\n"
        );
        // Inside a substitution.
        assert_eq!(
            rw("x=$(cat <<EOF\n{stem}\nEOF\n)"),
            "x=$(cat <<EOF\n${RIGMIND_STEM}\nEOF\n)"
        );
        // A quote in the body is a literal character, not a string.
        assert_eq!(
            rw("cat <<EOF\ndon't\nEOF\necho {item}"),
            "cat <<EOF\ndon't\nEOF\necho \"${RIGMIND_ITEM}\""
        );
        for quoted in ["<<'EOF'", "<<\"EOF\"", "<<\\EOF", "<<-'EOF'"] {
            let e =
                rewrite(&format!("python - {quoted}\nprint('{{item}}')\nEOF\n"), 0).unwrap_err();
            assert!(e.contains("quoted heredoc"), "{e}");
            assert!(e.contains("$RIGMIND_ITEM"), "{e}");
        }
        // A quoted heredoc without placeholders is fine, and {index} is refused too.
        assert_eq!(rw("cat <<'E'\n$x\nE\n"), "cat <<'E'\n$x\nE\n");
        assert!(rewrite("cat <<'E'\n{index}\nE\n", 0).is_err());
        // A here-string and an arithmetic shift are not heredocs.
        assert_eq!(
            rw("cat <<< {item}; echo $((1 << 2))\n{stem}"),
            "cat <<< \"${RIGMIND_ITEM}\"; echo $((1 << 2))\n\"${RIGMIND_STEM}\""
        );
    }

    #[test]
    fn comments_are_copied_and_do_not_open_quotes() {
        assert_eq!(
            rw("# don't {item}\necho {item} a#b"),
            "# don't {item}\necho \"${RIGMIND_ITEM}\" a#b"
        );
    }

    #[test]
    fn shell_parameters_named_like_placeholders_are_ambiguous() {
        let e = rewrite("echo ${item}", 0).unwrap_err();
        assert!(e.contains("ambiguous") && e.contains("$item"), "{e}");
        assert!(rewrite("echo \"${stem}\"", 0).is_err());
        // Other braces are the shell's own.
        assert_eq!(
            rw("awk '{print $1}' {item} ${HOME} {x}"),
            r#"awk '{print $1}' "${RIGMIND_ITEM}" ${HOME} {x}"#
        );
    }

    #[test]
    fn what_bash_runs_sees_the_exact_value() {
        let commands = [
            "printf %s {item}",
            "printf %s \"{item}\"",
            "printf %s '{item}'",
            "printf %s $'{item}'",
            "printf %s \"$(printf %s {item})\"",
            "printf %s \"`printf %s {item}`x\"",
            "cat <<EOF\n{item}\nEOF",
        ];
        let dir = tempfile::tempdir().unwrap();
        for cmd in commands {
            let rewritten = rw(cmd);
            for &item in rigmind_testkit::HOSTILE_NAMES {
                let out = std::process::Command::new("bash")
                    .arg("-c")
                    .arg(&rewritten)
                    .current_dir(dir.path())
                    .env(ITEM_VAR, item)
                    .output()
                    .unwrap();
                let got = String::from_utf8_lossy(&out.stdout);
                let want = if cmd.contains("`") {
                    // Command substitution strips trailing newlines only.
                    format!("{item}x")
                } else if cmd.contains("<<") {
                    format!("{item}\n")
                } else {
                    item.to_string()
                };
                assert_eq!(got, want, "{cmd:?} with {item:?} ran {rewritten:?}");
                assert!(!dir.path().join("PWNED").exists(), "{cmd:?} with {item:?}");
            }
        }
    }
}
