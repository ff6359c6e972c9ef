//! Markdown → [`Plan`]: headings, the field list of each task, values, Defaults.

use std::path::{Path, PathBuf};

use rigmind_types::{Executor, TaskClass};

use crate::diag::{Diags, PlanError};
use crate::md::{self, Lines, Node};
use crate::plan::{ForEach, LlmFields, Plan, PlanTask};
use crate::suggest::did_you_mean;

use std::collections::HashMap;

/// Reads and parses a plan file (refusing a file that is not UTF-8).
pub fn parse_file(path: &Path) -> Result<Plan, PlanError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            let mut d = Diags::new(path);
            d.error(0, format!("cannot read plan {}: {e}", path.display()));
            return Err(PlanError {
                diagnostics: d.sorted(),
            });
        }
    };
    match std::str::from_utf8(&bytes) {
        Ok(text) => parse_str(path, text),
        Err(e) => {
            let bad_line = bytes[..e.valid_up_to()]
                .iter()
                .filter(|&&b| b == b'\n')
                .count()
                + 1;
            let mut d = Diags::new(path);
            d.error(1, format!("not UTF-8: invalid byte at line {bad_line}"));
            Err(PlanError {
                diagnostics: d.sorted(),
            })
        }
    }
}

/// Parses plan text; `path` is used for messages and to find the plan's directory.
pub fn parse_str(path: &Path, text: &str) -> Result<Plan, PlanError> {
    let mut d = Diags::new(path);
    let mut plan = parse_inner(path, text, &mut d);
    plan.warnings = d.finish()?;
    Ok(plan)
}

/// Every field a task may set, in the order used for suggestions.
pub(crate) const KEYS: [&str; 24] = [
    "task_class",
    "command",
    "depends_on",
    "priority",
    "timeout",
    "retries",
    "executor",
    "group",
    "vram_mb",
    "mem_mb",
    "mem_limit_mb",
    "for_each",
    "env",
    "model",
    "prompt",
    "prompt_file",
    "system",
    "output",
    "write_outside",
    "sensitive",
    "estimate",
    "expect",
    "endpoint",
    "requires_external",
];

/// Fields that only make sense per task.
const NOT_IN_DEFAULTS: [&str; 6] = [
    "depends_on",
    "for_each",
    "command",
    "prompt",
    "prompt_file",
    "output",
];

/// A field value as written.
enum Value {
    /// Text after the colon (one inline code span is unwrapped).
    Text(String),
    /// A fenced (or indented) code block nested in the item.
    Block(String),
    /// A nested list: one element per item.
    List(Vec<String>),
    /// Nothing at all.
    Empty,
}

/// A value and the line of its item.
type At<T> = Option<(T, usize)>;

/// The fields of one section, validated one by one.
#[derive(Default)]
struct Fields {
    /// Keys present (valid or not), with their line.
    seen: HashMap<String, usize>,
    task_class: At<TaskClass>,
    command: At<String>,
    depends_on: At<Vec<String>>,
    priority: At<u8>,
    timeout: At<f64>,
    retries: At<u32>,
    executor: At<Executor>,
    group: At<String>,
    vram_mb: At<u64>,
    mem_mb: At<u64>,
    mem_limit_mb: At<u64>,
    for_each: At<ForEach>,
    env: At<Vec<(String, String)>>,
    model: At<String>,
    prompt: At<String>,
    prompt_file: At<String>,
    system: At<String>,
    output: At<String>,
    write_outside: At<bool>,
    sensitive: At<bool>,
    estimate: At<f64>,
    expect_json: At<bool>,
    endpoint: At<String>,
    requires_external: At<bool>,
}

/// A level-2 section.
struct Section<'n, 'a> {
    heading: String,
    line: usize,
    nodes: Vec<&'n Node<'a>>,
}

fn parse_inner(path: &Path, text: &str, d: &mut Diags) -> Plan {
    let text = normalized(text);
    let text = text.as_ref();
    let lines = Lines::new(text);
    let nodes = md::tree(text);
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let outline = Outline::of(text, &lines, &nodes);
    let name = plan_name(path, outline.name, d);
    let end = outline.first_h2.unwrap_or(text.len());
    let start = outline.h1_end.unwrap_or(0);
    let description = if start <= end {
        text[start..end].trim().to_string()
    } else {
        String::new()
    };
    // Defaults first, so they apply to tasks before and after the section.
    let defaults = read_defaults(text, &lines, &outline.sections, d);
    let tasks = read_tasks(text, &lines, &outline.sections, &defaults, d);
    if tasks.is_empty() {
        d.error(1, "plan has no tasks");
    }
    crate::dag::check(&tasks, d);

    Plan {
        path: path.to_path_buf(),
        dir,
        name,
        description,
        tasks,
        warnings: Vec::new(),
    }
}

/// The text without a byte-order mark, with CRLF line ends made LF.
fn normalized(text: &str) -> std::borrow::Cow<'_, str> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.contains('\r') {
        text.replace("\r\n", "\n").into()
    } else {
        text.into()
    }
}

/// The headings of a plan: its name (the first level-1 heading) and its level-2
/// sections with the nodes under each.
struct Outline<'n, 'a> {
    name: Option<String>,
    /// Where the first level-1 heading ends (the description starts).
    h1_end: Option<usize>,
    /// Where the first level-2 heading starts (the description ends).
    first_h2: Option<usize>,
    sections: Vec<Section<'n, 'a>>,
}

impl<'n, 'a> Outline<'n, 'a> {
    fn of(text: &str, lines: &Lines, nodes: &'n [Node<'a>]) -> Self {
        let mut o = Outline {
            name: None,
            h1_end: None,
            first_h2: None,
            sections: Vec::new(),
        };
        for node in nodes {
            match node.heading_level() {
                Some(1) if o.name.is_none() => {
                    let t = md::heading_text(&text[node.range.clone()]);
                    let t = strip_prefix_ci(&t, "plan:").trim().to_string();
                    o.name = Some(t);
                    o.h1_end = Some(node.range.end);
                }
                Some(2) => {
                    o.first_h2.get_or_insert(node.range.start);
                    o.sections.push(Section {
                        heading: md::heading_text(&text[node.range.clone()]),
                        line: lines.line(node.range.start),
                        nodes: Vec::new(),
                    });
                }
                _ => {
                    if let Some(s) = o.sections.last_mut() {
                        s.nodes.push(node);
                    }
                }
            }
        }
        o
    }
}

/// The plan's name: its heading's, else (with a warning) its file's stem.
fn plan_name(path: &Path, heading: Option<String>, d: &mut Diags) -> String {
    let stem = || {
        path.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    match heading {
        Some(n) if !n.is_empty() => n,
        Some(_) => {
            d.warning(
                1,
                format!("the plan's heading has no name; using '{}'", stem()),
            );
            stem()
        }
        None => {
            d.warning(
                1,
                format!(
                    "plan has no level-1 heading; named '{}' after its file",
                    stem()
                ),
            );
            stem()
        }
    }
}

/// The fields of the Defaults section (none when there is none); a second one is
/// an error.
fn read_defaults(text: &str, lines: &Lines, sections: &[Section<'_, '_>], d: &mut Diags) -> Fields {
    let mut defaults = Fields::default();
    let mut defaults_line: Option<usize> = None;
    for s in sections {
        if s.heading.eq_ignore_ascii_case("defaults") {
            let (fields, _) = read_fields(text, lines, &s.nodes, true, d);
            if let Some(first) = defaults_line {
                d.error(
                    s.line,
                    format!("a second Defaults section (the first is at line {first})"),
                );
            } else {
                defaults_line = Some(s.line);
                defaults = fields;
            }
        }
    }
    defaults
}

/// The tasks of every section but Defaults, in plan order, with `defaults` applied.
fn read_tasks(
    text: &str,
    lines: &Lines,
    sections: &[Section<'_, '_>],
    defaults: &Fields,
    d: &mut Diags,
) -> Vec<PlanTask> {
    let mut tasks = Vec::new();
    let mut names: HashMap<String, usize> = HashMap::new();
    for s in sections {
        if s.heading.eq_ignore_ascii_case("defaults") {
            continue;
        }
        let task_name = task_name(s, &mut names, d);
        let (fields, notes) = read_fields(text, lines, &s.nodes, false, d);
        tasks.push(build_task(task_name, s.line, fields, defaults, notes, d));
    }
    tasks
}

/// The task name of a section's heading, checked: not empty, valid characters, not
/// taken by an earlier section (`names`: the names so far, with their lines).
fn task_name(s: &Section<'_, '_>, names: &mut HashMap<String, usize>, d: &mut Diags) -> String {
    let task_name = strip_prefix_ci(&s.heading, "task:").trim();
    let task_name = md::unwrap_code(task_name).unwrap_or_else(|| task_name.to_string());
    if task_name.is_empty() {
        d.error(s.line, "task heading has no name");
    } else if !task_name.chars().all(valid_name_char) {
        d.error(
            s.line,
            format!(
                "task name '{task_name}' may only contain ASCII letters, digits, '_', '-' and '.'"
            ),
        );
    } else if let Some(first) = names.get(&task_name) {
        d.error(
            s.line,
            format!("duplicate task name '{task_name}' (first defined at line {first})"),
        );
    } else {
        names.insert(task_name.clone(), s.line);
    }
    task_name
}

fn valid_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')
}

fn strip_prefix_ci<'s>(s: &'s str, prefix: &str) -> &'s str {
    let t = s.trim_start();
    match t.get(..prefix.len()) {
        Some(head) if head.eq_ignore_ascii_case(prefix) => &t[prefix.len()..],
        _ => s,
    }
}

/// Reads the first bullet list of a section as fields; everything else is notes.
fn read_fields(
    text: &str,
    lines: &Lines,
    nodes: &[&Node<'_>],
    in_defaults: bool,
    d: &mut Diags,
) -> (Fields, String) {
    let mut fields = Fields::default();
    let mut notes = Vec::new();
    let mut list_seen = false;
    for node in nodes {
        if !list_seen && node.is_bullet_list() {
            list_seen = true;
            for item in node.children.iter().filter(|c| c.is_item()) {
                read_item(text, lines, item, in_defaults, &mut fields, d);
            }
        } else {
            let raw = text[node.range.clone()].trim();
            if !raw.is_empty() {
                notes.push(raw);
            }
        }
    }
    (fields, notes.join("\n\n"))
}

/// The text of a nested list item: first paragraph, inline code unwrapped.
fn element_text(text: &str, item: &Node<'_>) -> String {
    let Some((range, _)) = item.first_paragraph() else {
        return String::new();
    };
    let t = md::join_trimmed(&text[range]);
    md::unwrap_code(&t).unwrap_or(t).trim().to_string()
}

fn read_item(
    text: &str,
    lines: &Lines,
    item: &Node<'_>,
    in_defaults: bool,
    f: &mut Fields,
    d: &mut Diags,
) {
    let line = lines.line(item.range.start);
    let Some((range, used)) = item.first_paragraph() else {
        d.error(line, "list item is not 'key: value'");
        return;
    };
    let raw = &text[range];
    let Some(colon) = raw.find(':') else {
        d.error(
            line,
            format!(
                "list item '{}' is not 'key: value'",
                shorten(&md::join_trimmed(raw))
            ),
        );
        return;
    };
    let key = raw[..colon]
        .trim()
        .trim_matches(|c| c == '*' || c == '`')
        .trim()
        .to_ascii_lowercase();
    if key.is_empty() {
        d.error(line, "list item has no key before ':'");
        return;
    }
    if !KEYS.contains(&key.as_str()) {
        d.error(
            line,
            format!("unknown field '{key}'{}", did_you_mean(&key, KEYS)),
        );
        return;
    }
    if in_defaults && NOT_IN_DEFAULTS.contains(&key.as_str()) {
        d.error(line, format!("'{key}' cannot be set in Defaults"));
        return;
    }
    if let Some(first) = f.seen.get(&key) {
        d.error(
            line,
            format!("field '{key}' is set twice (first at line {first})"),
        );
        return;
    }
    f.seen.insert(key.clone(), line);
    let whole = &text[item.range.clone()];
    if let Some(at) = whole.find('\0') {
        d.error(
            lines.line(item.range.start + at),
            format!("field '{key}' holds a NUL byte, which no command, environment or file name can carry"),
        );
        return;
    }

    let rest = md::join_trimmed(&raw[colon + 1..]);
    let value = if !rest.is_empty() {
        Value::Text(md::unwrap_code(&rest).unwrap_or(rest))
    } else {
        let nested = item
            .children
            .iter()
            .skip(used)
            .find(|c| c.is_fenced_code() || c.is_list() || is_code(c));
        match nested {
            Some(n) if n.is_list() => Value::List(
                n.children
                    .iter()
                    .filter(|c| c.is_item())
                    .map(|c| element_text(text, c))
                    .filter(|t| !t.is_empty())
                    .collect(),
            ),
            Some(n) => Value::Block(n.code_text()),
            None => Value::Empty,
        }
    };
    if let Err(msg) = set_field(&key, value, line, f) {
        d.error(line, msg);
    }
}

fn is_code(n: &Node<'_>) -> bool {
    matches!(
        n.ev,
        pulldown_cmark::Event::Start(pulldown_cmark::Tag::CodeBlock(_))
    )
}

fn shorten(s: &str) -> String {
    let first = s.lines().next().unwrap_or("");
    if first.chars().count() > 40 || s.contains('\n') {
        format!("{}…", first.chars().take(40).collect::<String>())
    } else {
        first.to_string()
    }
}

fn no_value(key: &str) -> String {
    format!("field '{key}' has no value")
}

/// A single text value.
fn scalar(key: &str, v: Value) -> Result<String, String> {
    let s = match v {
        Value::Text(text) => text,
        Value::Block(b) => b,
        Value::List(_) => return Err(format!("field '{key}' takes one value, not a list")),
        Value::Empty => return Err(no_value(key)),
    };
    if s.trim().is_empty() {
        return Err(no_value(key));
    }
    Ok(s)
}

/// A list value: comma (or line) separated text, or a nested list.
fn list(key: &str, v: Value) -> Result<Vec<String>, String> {
    let items: Vec<String> = match v {
        Value::List(items) => items,
        Value::Empty => return Err(no_value(key)),
        Value::Text(text) | Value::Block(text) => {
            let t = text.trim();
            let t = t
                .strip_prefix('[')
                .and_then(|t| t.strip_suffix(']'))
                .unwrap_or(t);
            t.split([',', '\n'])
                .map(|e| {
                    let e = e.trim();
                    md::unwrap_code(e)
                        .unwrap_or_else(|| e.to_string())
                        .trim()
                        .to_string()
                })
                .filter(|e| !e.is_empty())
                .collect()
        }
    };
    if items.is_empty() {
        return Err(no_value(key));
    }
    Ok(items)
}

/// Splits `a, "b, c", 'd'` on commas outside quotes, trims, strips quotes.
fn inline_list(inner: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    for c in inner.chars() {
        match (quote, c) {
            (None, '"' | '\'') if cur.trim().is_empty() => {
                quote = Some(c);
                cur.push(c);
            }
            (Some(q), _) if c == q => {
                quote = None;
                cur.push(c);
            }
            (None, ',') => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out.into_iter()
        .map(|e| {
            let e = e.trim();
            let unq = ['"', '\''].iter().find_map(|&q| {
                e.strip_prefix(q)
                    .and_then(|r| r.strip_suffix(q))
                    .filter(|_| e.len() >= 2)
            });
            unq.unwrap_or(e).to_string()
        })
        .filter(|e| !e.is_empty())
        .collect()
}

fn parse_for_each(v: Value) -> Result<ForEach, String> {
    let text = match v {
        Value::List(items) if items.is_empty() => return Err(no_value("for_each")),
        Value::List(items) => return Ok(ForEach::List(items)),
        Value::Empty => return Err(no_value("for_each")),
        Value::Text(text) | Value::Block(text) => text.trim().to_string(),
    };
    if text.is_empty() {
        return Err(no_value("for_each"));
    }
    match text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
        Some(inner) => Ok(ForEach::List(inline_list(inner))),
        None => Ok(ForEach::Glob(text)),
    }
}

fn valid_env_key(k: &str) -> bool {
    let mut chars = k.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_env(v: Value) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for entry in list("env", v)? {
        let Some((k, val)) = entry.split_once('=') else {
            return Err(format!("env entry '{entry}' is not KEY=value"));
        };
        let k = k.trim();
        if !valid_env_key(k) {
            return Err(format!(
                "env name '{k}' is not valid (letters, digits and '_', not starting with a digit)"
            ));
        }
        out.push((k.to_string(), val.trim().to_string()));
    }
    Ok(out)
}

fn parse_bool(key: &str, s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" => Ok(true),
        "false" | "no" => Ok(false),
        _ => Err(format!("{key} must be true or false, not '{}'", s.trim())),
    }
}

/// `expect`: only `json` is known (the answer must parse as JSON).
fn parse_expect(s: &str) -> Result<bool, String> {
    match s.trim() {
        "json" => Ok(true),
        other => Err(format!("expect '{other}' is not known (only 'json' is)")),
    }
}

fn parse_priority(s: &str) -> Result<u8, String> {
    match s.trim().parse::<i64>() {
        Ok(p @ 1..=9) => Ok(p as u8),
        Ok(10) => Err("priority 10 is reserved for resource tasks".to_string()),
        _ => Err(format!(
            "bad priority '{}' (expected an integer from 1 to 9)",
            s.trim()
        )),
    }
}

fn parse_dur(key: &str, s: &str) -> Result<f64, String> {
    rigmind_types::parse_duration(s).map_err(|e| format!("field '{key}': {e}"))
}

fn set_field(key: &str, v: Value, line: usize, f: &mut Fields) -> Result<(), String> {
    match key {
        "task_class" => {
            let s = scalar(key, v)?;
            let class: TaskClass = s
                .parse()
                .map_err(|e: rigmind_types::UnknownClass| e.to_string())?;
            if class == TaskClass::Resource {
                return Err("task_class 'resource' is reserved for the brain".to_string());
            }
            f.task_class = Some((class, line));
        }
        "command" => f.command = Some((scalar(key, v)?, line)),
        "depends_on" => f.depends_on = Some((list(key, v)?, line)),
        "priority" => f.priority = Some((parse_priority(&scalar(key, v)?)?, line)),
        "timeout" => {
            let s = scalar(key, v)?;
            let secs = parse_dur(key, &s)?;
            if secs <= 0.0 {
                return Err(format!("timeout must be more than 0, not '{}'", s.trim()));
            }
            f.timeout = Some((secs, line));
        }
        "estimate" => f.estimate = Some((parse_dur(key, &scalar(key, v)?)?, line)),
        "retries" => {
            let s = scalar(key, v)?;
            let n = s.trim().parse::<u32>().map_err(|_| {
                format!(
                    "bad retries '{}' (expected a non-negative integer)",
                    s.trim()
                )
            })?;
            f.retries = Some((n, line));
        }
        "executor" => f.executor = Some((scalar(key, v)?.parse::<Executor>()?, line)),
        "group" => {
            let s = scalar(key, v)?.trim().to_string();
            if !s.chars().all(valid_name_char) {
                return Err(format!(
                    "group '{s}' may only contain ASCII letters, digits, '_', '-' and '.'"
                ));
            }
            f.group = Some((s, line));
        }
        "vram_mb" => f.vram_mb = Some((parse_mb(key, &scalar(key, v)?)?, line)),
        "mem_mb" => f.mem_mb = Some((parse_mb(key, &scalar(key, v)?)?, line)),
        "mem_limit_mb" => f.mem_limit_mb = Some((parse_mb(key, &scalar(key, v)?)?, line)),
        "for_each" => f.for_each = Some((parse_for_each(v)?, line)),
        "env" => f.env = Some((parse_env(v)?, line)),
        "model" => f.model = Some((scalar(key, v)?.trim().to_string(), line)),
        "prompt" => f.prompt = Some((scalar(key, v)?, line)),
        "prompt_file" => f.prompt_file = Some((scalar(key, v)?.trim().to_string(), line)),
        "system" => f.system = Some((scalar(key, v)?, line)),
        "output" => f.output = Some((scalar(key, v)?.trim().to_string(), line)),
        "sensitive" => f.sensitive = Some((parse_bool(key, &scalar(key, v)?)?, line)),
        "write_outside" => f.write_outside = Some((parse_bool(key, &scalar(key, v)?)?, line)),
        "expect" => f.expect_json = Some((parse_expect(&scalar(key, v)?)?, line)),
        "endpoint" => f.endpoint = Some((scalar(key, v)?.trim().to_string(), line)),
        "requires_external" => {
            f.requires_external = Some((parse_bool(key, &scalar(key, v)?)?, line));
        }
        _ => unreachable!("keys are checked against KEYS"),
    }
    Ok(())
}

/// Why an `output` path would leave the plan's directory, judged by its text
/// (the worker checks again, links included, before it writes).
fn leaves_plan_dir(out: &str) -> Option<&'static str> {
    let path = Path::new(out);
    if path.is_absolute() {
        return Some("is an absolute path, outside the plan's directory");
    }
    let mut depth = 0i32;
    for c in path.components() {
        match c {
            std::path::Component::ParentDir => depth -= 1,
            std::path::Component::Normal(_) => depth += 1,
            _ => {}
        }
        if depth < 0 {
            return Some("climbs out of the plan's directory");
        }
    }
    None
}

/// A positive number of megabytes (`vram_mb`, `mem_mb`, `mem_limit_mb`).
fn parse_mb(key: &str, s: &str) -> Result<u64, String> {
    match s.trim().parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!(
            "bad {key} '{}' (expected a positive integer)",
            s.trim()
        )),
    }
}

fn val<T: Clone>(task: &At<T>, defaults: &At<T>) -> Option<T> {
    task.as_ref().or(defaults.as_ref()).map(|(v, _)| v.clone())
}

/// Applies Defaults and checks what a task needs.
fn build_task(
    name: String,
    line: usize,
    f: Fields,
    defs: &Fields,
    notes: String,
    d: &mut Diags,
) -> PlanTask {
    let task_class = val(&f.task_class, &defs.task_class);
    let command = f.command.as_ref().map(|(c, _)| c.clone());
    let prompt = f.prompt.as_ref().map(|(p, _)| p.clone());
    let executor = val(&f.executor, &defs.executor).unwrap_or_default();
    let kind = Kind {
        name: &name,
        line,
        class: task_class,
        class_given: f.seen.contains_key("task_class") || defs.seen.contains_key("task_class"),
        effective: task_class
            .unwrap_or_else(|| rigmind_types::infer_class(command.as_deref(), prompt.is_some())),
    };
    check_runs(&kind, &f, command.as_deref(), prompt.as_deref(), d);
    let write_outside = val(&f.write_outside, &defs.write_outside).unwrap_or(false);
    check_output(&kind, &f, write_outside, d);
    check_executor(&kind, &f, executor, d);

    PlanTask {
        name,
        line,
        task_class,
        command,
        command_line: f.command.as_ref().map_or(line, |(_, l)| *l),
        depends_on: f
            .depends_on
            .as_ref()
            .map(|(v, _)| v.clone())
            .unwrap_or_default(),
        depends_on_line: f.depends_on.as_ref().map(|(_, l)| *l).unwrap_or(line),
        priority: val(&f.priority, &defs.priority).unwrap_or(5),
        timeout_secs: val(&f.timeout, &defs.timeout),
        retries: val(&f.retries, &defs.retries),
        executor,
        group: val(&f.group, &defs.group),
        vram_mb: val(&f.vram_mb, &defs.vram_mb),
        mem_mb: val(&f.mem_mb, &defs.mem_mb),
        mem_limit_mb: val(&f.mem_limit_mb, &defs.mem_limit_mb),
        for_each: f.for_each.as_ref().map(|(v, _)| v.clone()),
        for_each_line: f.for_each.as_ref().map(|(_, l)| *l).unwrap_or(line),
        env: val(&f.env, &defs.env).unwrap_or_default(),
        llm: LlmFields {
            model: val(&f.model, &defs.model),
            prompt,
            prompt_file: f.prompt_file.as_ref().map(|(v, _)| v.clone()),
            system: val(&f.system, &defs.system),
            output: f.output.as_ref().map(|(v, _)| v.clone()),
            write_outside,
            sensitive: val(&f.sensitive, &defs.sensitive).unwrap_or(false),
            expect_json: val(&f.expect_json, &defs.expect_json).unwrap_or(false),
            endpoint: val(&f.endpoint, &defs.endpoint),
            requires_external: val(&f.requires_external, &defs.requires_external).unwrap_or(false),
        },
        estimate_secs: val(&f.estimate, &defs.estimate),
        notes,
    }
}

/// What decides which fields a task needs: its class, written or inferred.
struct Kind<'a> {
    name: &'a str,
    line: usize,
    /// `task_class` as written (in the task or Defaults), when it parsed.
    class: Option<TaskClass>,
    /// `task_class` was written, whether or not it parsed (then it has its error).
    class_given: bool,
    /// The class it runs as: the written one, else the one inferred.
    effective: TaskClass,
}

/// A task has what its class runs (an llm task a prompt, others a command), and
/// a task without a class says which one was inferred; a command on an llm task
/// is ignored, with a warning.
fn check_runs(
    k: &Kind<'_>,
    f: &Fields,
    command: Option<&str>,
    prompt: Option<&str>,
    d: &mut Diags,
) {
    let (name, line, effective) = (k.name, k.line, k.effective);
    match k.class {
        Some(TaskClass::Llm) => {
            if prompt.is_none() && !f.seen.contains_key("prompt") {
                d.error(
                    line,
                    format!("task '{name}' has no prompt (llm tasks need one)"),
                );
            }
        }
        Some(_) => {
            if command.is_none() && !f.seen.contains_key("command") {
                d.error(
                    line,
                    format!("task '{name}' has no command (cpu and script tasks need one)"),
                );
            }
        }
        None if k.class_given => {}
        None => {
            if command.is_none() && prompt.is_none() {
                if !f.seen.contains_key("command") && !f.seen.contains_key("prompt") {
                    d.error(line, format!("task '{name}' has no command"));
                }
            } else {
                let from = if effective == TaskClass::Llm && prompt.is_some() {
                    "its prompt"
                } else {
                    "its command"
                };
                d.warning(
                    line,
                    format!("task '{name}' has no task_class; inferred '{effective}' from {from}"),
                );
            }
        }
    }
    if effective == TaskClass::Llm {
        if let Some((_, cline)) = &f.command {
            d.warning(
                *cline,
                format!("task '{name}': command is ignored for llm tasks"),
            );
        }
    }
}

/// An `output` stays inside the plan's directory unless `write_outside` says so.
fn check_output(k: &Kind<'_>, f: &Fields, write_outside: bool, d: &mut Diags) {
    if let (Some((out, oline)), false) = (&f.output, write_outside) {
        if let Some(why) = leaves_plan_dir(out) {
            d.error(
                *oline,
                format!(
                    "task '{}': output '{out}' {why}; add 'write_outside: true' if that is meant",
                    k.name
                ),
            );
        }
    }
}

/// `executor: brain` is only for cpu tasks.
fn check_executor(k: &Kind<'_>, f: &Fields, executor: Executor, d: &mut Diags) {
    if executor == Executor::Brain
        && k.effective != TaskClass::Cpu
        && !(k.class_given && k.class.is_none())
    {
        let (eline, whence) = match &f.executor {
            Some((_, l)) => (*l, ""),
            None => (k.line, " (set in Defaults)"),
        };
        d.error(
            eline,
            format!(
                "task '{}': executor 'brain'{whence} is only for cpu tasks, and this one is {}",
                k.name, k.effective
            ),
        );
    }
}
