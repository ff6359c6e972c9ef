//! [`Plan`] → [`ExpandedPlan`]: for_each expansion, substitution, dependency edges, cycles.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use rigmind_types::{Executor, TaskClass};

use crate::diag::{Diagnostic, Diags, PlanError, Severity};
use crate::plan::{ForEach, LlmFields, Plan, PlanTask};
use crate::shellsub::CommandTemplate;

/// Values used where neither the task nor the plan's Defaults set them (rig.toml's
/// `[defaults]`, else the spec's).
#[derive(Debug, Clone, PartialEq)]
pub struct ExpandDefaults {
    pub timeout_secs: f64,
    pub retries: u32,
}

impl Default for ExpandDefaults {
    fn default() -> Self {
        Self {
            timeout_secs: 1800.0,
            retries: 3,
        }
    }
}

/// One runnable task after expansion: `transcribe[ep1]` or a plain `init`.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// `name` or `name[stem]`.
    pub name: String,
    /// The plan task it came from.
    pub plan_task_id: String,
    /// Line of the plan task's heading.
    pub line: usize,
    pub task_class: TaskClass,
    /// True when the plan did not say the class and it was inferred (a warning).
    pub class_inferred: bool,
    pub command: Option<String>,
    /// Indices into [`ExpandedPlan::jobs`], sorted, no duplicates.
    pub depends_on: Vec<usize>,
    /// Compact display form for task files: `init`, `transcribe[ep1]`, or `transcribe`
    /// for all items of a fan-in.
    pub depends_on_names: Vec<String>,
    pub priority: u8,
    pub timeout_secs: f64,
    pub retries: u32,
    pub executor: Executor,
    pub group: Option<String>,
    pub vram_mb: Option<u64>,
    /// Host RAM it reserves (the plan's `mem_mb`).
    pub mem_mb: Option<u64>,
    /// Its memory cap (the plan's `mem_limit_mb`).
    pub mem_limit_mb: Option<u64>,
    pub env: Vec<(String, String)>,
    pub llm: LlmFields,
    pub estimate_secs: Option<f64>,
    /// The for_each item, its stem and its 0-based index, for fanned-out jobs: the
    /// executor exports them as `RIGMIND_ITEM`, `RIGMIND_STEM`, `RIGMIND_INDEX`,
    /// which the rewritten `command` refers to.
    pub item: Option<String>,
    pub stem: Option<String>,
    pub index: Option<usize>,
}

/// A plan ready to submit: its jobs in plan order, items in sorted order.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpandedPlan {
    pub path: PathBuf,
    pub dir: PathBuf,
    pub name: String,
    pub description: String,
    pub jobs: Vec<Job>,
    /// Parse and expansion warnings.
    pub warnings: Vec<Diagnostic>,
}

impl ExpandedPlan {
    /// Each job's dependents (the jobs that wait on it), by index: what walks a
    /// plan from its ends back (the claim order's chains, the lower bound's paths).
    pub fn dependents(&self) -> Vec<Vec<usize>> {
        let mut out = vec![Vec::new(); self.jobs.len()];
        for (i, j) in self.jobs.iter().enumerate() {
            for &d in &j.depends_on {
                out[d].push(i);
            }
        }
        out
    }

    /// The jobs in an order where each comes after its dependencies (Kahn's), so
    /// that a pass over it, or back over it, sees a job's dependencies, or its
    /// dependents, first. Jobs on a cycle, which validation refuses
    /// ([`crate::dag`]), are left out.
    pub fn topological(&self) -> Vec<usize> {
        let dependents = self.dependents();
        let mut unmet: Vec<usize> = self.jobs.iter().map(|j| j.depends_on.len()).collect();
        let mut order: Vec<usize> = (0..self.jobs.len()).filter(|&i| unmet[i] == 0).collect();
        let mut next = 0;
        while next < order.len() {
            let i = order[next];
            next += 1;
            for &k in &dependents[i] {
                unmet[k] -= 1;
                if unmet[k] == 0 {
                    order.push(k);
                }
            }
        }
        order
    }
}

/// Expands `for_each` (globs against `plan.dir`), substitutes `{item}` `{stem}`
/// `{index}` in fanned-out tasks, resolves dependencies, infers missing classes.
///
/// In a `command`, `{item}` and `{stem}` become quoted references to the
/// environment variables `RIGMIND_ITEM` / `RIGMIND_STEM` (see [`crate::shellsub`]):
/// a file name never runs as code. Other fields get the values as text.
///
/// Dependency rules between two plan tasks: both over the same `for_each` value →
/// item-wise; only the dependent fans out → every item waits for the one job; only
/// the dependency fans out → fan-in on all its items; both over different values →
/// every item waits for all items (with a warning).
pub fn expand(plan: &Plan, defaults: &ExpandDefaults) -> Result<ExpandedPlan, PlanError> {
    let mut d = Diags::new(&plan.path);
    d.list.extend(
        plan.warnings
            .iter()
            .filter(|w| w.severity == Severity::Warning)
            .cloned(),
    );
    crate::dag::check(&plan.tasks, &mut d);
    let index = crate::dag::name_index(&plan.tasks);
    if index.len() != plan.tasks.len() {
        report_duplicate_names(plan, &mut d);
    }
    let items = all_items(plan, &mut d);
    let templates = command_templates(plan, &mut d);
    if d.has_errors() {
        return Err(PlanError {
            diagnostics: d.sorted(),
        });
    }

    // Job index ranges per plan task.
    let mut starts = Vec::with_capacity(plan.tasks.len());
    let mut total = 0;
    for it in &items {
        starts.push(total);
        total += it.as_ref().map_or(1, |i| i.len());
    }
    let ctx = Expansion {
        plan,
        defaults,
        items: &items,
        starts: &starts,
        templates: &templates,
    };
    let mut jobs = Vec::with_capacity(total);
    for (ti, t) in plan.tasks.iter().enumerate() {
        let deps = resolved_deps(plan, &index, t);
        if items[ti].is_some() {
            warn_mixed_fan_out(plan, t, &deps, &mut d);
            ctx.push_item_jobs(ti, &deps, &mut jobs);
        } else {
            ctx.push_single_job(ti, &deps, &mut jobs);
        }
    }

    let mut warnings = d.sorted();
    warnings.retain(|w| w.severity == Severity::Warning);
    Ok(ExpandedPlan {
        path: plan.path.clone(),
        dir: plan.dir.clone(),
        name: plan.name.clone(),
        description: plan.description.clone(),
        jobs,
        warnings,
    })
}

/// Reports every task whose name an earlier task already has.
fn report_duplicate_names(plan: &Plan, d: &mut Diags) {
    let mut seen = HashSet::new();
    for t in &plan.tasks {
        if !seen.insert(t.name.as_str()) {
            d.error(t.line, format!("duplicate task name '{}'", t.name));
        }
    }
}

/// Items (and stems) of each fanned-out task, `None` for a task that does not fan
/// out; equal for_each values share one expansion. A value that failed is reported
/// at every task that uses it (and gives no items).
fn all_items(plan: &Plan, d: &mut Diags) -> Vec<Option<Items>> {
    let mut cache: Vec<(&ForEach, Option<Items>)> = Vec::new();
    let mut items: Vec<Option<Items>> = Vec::with_capacity(plan.tasks.len());
    for t in &plan.tasks {
        let Some(fe) = &t.for_each else {
            items.push(None);
            continue;
        };
        if let Some((_, cached)) = cache.iter().find(|(f, _)| *f == fe) {
            if cached.is_none() {
                // The first task with this value already reported its error; report here too.
                report_for_each_error(t, fe, &plan.dir, d);
            }
            items.push(Some(cached.clone().unwrap_or_default()));
            continue;
        }
        let expanded = expand_items(t, fe, &plan.dir, d);
        cache.push((fe, expanded.clone()));
        items.push(Some(expanded.unwrap_or_default()));
    }
    items
}

/// Resolved dependencies of plan task `t`, in order, without repeats; with each,
/// whether both fan out over the same for_each value (item-wise).
fn resolved_deps(plan: &Plan, index: &HashMap<&str, usize>, t: &PlanTask) -> Vec<(usize, bool)> {
    let mut deps: Vec<(usize, bool)> = Vec::new();
    for name in &t.depends_on {
        if let Some(&u) = index.get(name.as_str()) {
            if !deps.iter().any(|&(v, _)| v == u) {
                let same = t.for_each.is_some() && plan.tasks[u].for_each == t.for_each;
                deps.push((u, same));
            }
        }
    }
    deps
}

/// Warns when fanned-out `t` depends on a task that fans out over another value:
/// each of its items then waits for all of the dependency's.
fn warn_mixed_fan_out(plan: &Plan, t: &PlanTask, deps: &[(usize, bool)], d: &mut Diags) {
    for &(u, same) in deps {
        let dep = &plan.tasks[u];
        if dep.for_each.is_some() && !same {
            d.warning(
                t.depends_on_line,
                format!(
                    "task '{}' and its dependency '{}' fan out over different for_each values; \
                     each item of '{}' waits for all items of '{}'",
                    t.name, dep.name, t.name, dep.name
                ),
            );
        }
    }
}

/// What turning plan tasks into jobs reads: the checked plan and its expansions.
struct Expansion<'a> {
    plan: &'a Plan,
    defaults: &'a ExpandDefaults,
    items: &'a [Option<Items>],
    /// The index of each plan task's first job.
    starts: &'a [usize],
    templates: &'a [Option<CommandTemplate>],
}

impl Expansion<'_> {
    /// The jobs of fanned-out plan task `ti`, one per item, with the values filled in.
    fn push_item_jobs(&self, ti: usize, deps: &[(usize, bool)], jobs: &mut Vec<Job>) {
        let t = &self.plan.tasks[ti];
        let its = self.items[ti]
            .as_ref()
            .expect("a fanned-out task has items");
        for (i, (item, stem)) in its.iter().enumerate() {
            let (depends_on, depends_on_names) =
                edges(self.plan, self.items, self.starts, deps, Some(i));
            let sub = |s: &String| substitute(s, item, stem, i);
            jobs.push(make_job(
                t,
                format!("{}[{stem}]", t.name),
                self.defaults,
                Fill {
                    command: self.templates[ti].as_ref().map(|c| c.render(i)),
                    // The keyword rules read the values too (an item named
                    // `gpu.txt` makes a script task), as before the rewrite.
                    class_text: t
                        .command
                        .as_ref()
                        .filter(|_| t.task_class.is_none())
                        .map(sub),
                    llm: LlmFields {
                        model: t.llm.model.clone(),
                        prompt: t.llm.prompt.as_ref().map(sub),
                        prompt_file: t.llm.prompt_file.as_ref().map(sub),
                        system: t.llm.system.clone(),
                        output: t.llm.output.as_ref().map(sub),
                        write_outside: t.llm.write_outside,
                        sensitive: t.llm.sensitive,
                        expect_json: t.llm.expect_json,
                        endpoint: t.llm.endpoint.clone(),
                        requires_external: t.llm.requires_external,
                    },
                    env: t.env.iter().map(|(k, v)| (k.clone(), sub(v))).collect(),
                    item: Some(item.clone()),
                    stem: Some(stem.clone()),
                    index: Some(i),
                },
                depends_on,
                depends_on_names,
            ));
        }
    }

    /// The one job of plan task `ti`, which does not fan out.
    fn push_single_job(&self, ti: usize, deps: &[(usize, bool)], jobs: &mut Vec<Job>) {
        let t = &self.plan.tasks[ti];
        let (depends_on, depends_on_names) = edges(self.plan, self.items, self.starts, deps, None);
        jobs.push(make_job(
            t,
            t.name.clone(),
            self.defaults,
            Fill {
                command: t.command.clone(),
                class_text: None,
                llm: t.llm.clone(),
                env: t.env.clone(),
                item: None,
                stem: None,
                index: None,
            },
            depends_on,
            depends_on_names,
        ));
    }
}

/// `(item, stem)` pairs of a fanned-out task; shared by the tasks that fan out
/// over the same value (a million items are not copied per task).
type Items = Rc<Vec<(String, String)>>;

/// The per-item values of a job.
struct Fill {
    command: Option<String>,
    /// The command with the values pasted in, for class inference only (never run).
    class_text: Option<String>,
    llm: LlmFields,
    env: Vec<(String, String)>,
    item: Option<String>,
    stem: Option<String>,
    index: Option<usize>,
}

fn make_job(
    t: &PlanTask,
    name: String,
    defaults: &ExpandDefaults,
    fill: Fill,
    depends_on: Vec<usize>,
    depends_on_names: Vec<String>,
) -> Job {
    let (task_class, class_inferred) = match t.task_class {
        Some(c) => (c, false),
        None => (
            rigmind_types::infer_class(
                fill.class_text.as_deref().or(fill.command.as_deref()),
                fill.llm.prompt.is_some(),
            ),
            true,
        ),
    };
    Job {
        name,
        plan_task_id: t.name.clone(),
        line: t.line,
        task_class,
        class_inferred,
        command: fill.command,
        depends_on,
        depends_on_names,
        priority: t.priority,
        timeout_secs: t.timeout_secs.unwrap_or(defaults.timeout_secs),
        retries: t.retries.unwrap_or(defaults.retries),
        executor: t.executor,
        group: t.group.clone(),
        vram_mb: t.vram_mb,
        mem_mb: t.mem_mb,
        mem_limit_mb: t.mem_limit_mb,
        env: fill.env,
        llm: fill.llm,
        estimate_secs: t.estimate_secs,
        item: fill.item,
        stem: fill.stem,
        index: fill.index,
    }
}

/// The command template of each fanned-out task with a command (scanned once per
/// plan task, not per item); a command that cannot be made safe is an error at
/// its line.
fn command_templates(plan: &Plan, d: &mut Diags) -> Vec<Option<CommandTemplate>> {
    plan.tasks
        .iter()
        .map(|t| {
            let cmd = t.command.as_ref().filter(|_| t.for_each.is_some())?;
            match CommandTemplate::compile(cmd) {
                Ok(c) => Some(c),
                Err(msg) => {
                    d.error(t.command_line, format!("task '{}': {msg}", t.name));
                    None
                }
            }
        })
        .collect()
}

/// The dependency edges of one job (`item`: its index when the task fans out).
fn edges(
    plan: &Plan,
    items: &[Option<Items>],
    starts: &[usize],
    deps: &[(usize, bool)],
    item: Option<usize>,
) -> (Vec<usize>, Vec<String>) {
    let mut ids = Vec::new();
    let mut names = Vec::new();
    for &(u, same) in deps {
        let dep = &plan.tasks[u];
        match (&items[u], item) {
            (None, _) => {
                ids.push(starts[u]);
                names.push(dep.name.clone());
            }
            (Some(dep_items), Some(i)) if same && i < dep_items.len() => {
                ids.push(starts[u] + i);
                names.push(format!("{}[{}]", dep.name, dep_items[i].1));
            }
            (Some(dep_items), _) => {
                ids.extend(starts[u]..starts[u] + dep_items.len());
                names.push(dep.name.clone());
            }
        }
    }
    ids.sort_unstable();
    ids.dedup();
    (ids, names)
}

/// Items of a `for_each` with their stems, or `None` after reporting an error.
fn expand_items(t: &PlanTask, fe: &ForEach, dir: &Path, d: &mut Diags) -> Option<Items> {
    let raw = match list_items(fe, dir) {
        Ok(items) => items,
        Err(msg) => {
            d.error(t.for_each_line, format!("task '{}': {msg}", t.name));
            return None;
        }
    };
    let out: Vec<(String, String)> = raw
        .into_iter()
        .map(|item| {
            let stem = stem_of(&item);
            (item, stem)
        })
        .collect();
    // Borrowed stems: no copy of each one for the check.
    let mut stems: HashMap<&str, usize> = HashMap::with_capacity(out.len());
    let mut ok = true;
    for (i, (item, stem)) in out.iter().enumerate() {
        if let Some(&first) = stems.get(stem.as_str()) {
            d.error(
                t.for_each_line,
                format!(
                    "task '{}': for_each items '{}' and '{item}' have the same stem '{stem}'",
                    t.name, out[first].0
                ),
            );
            ok = false;
        } else {
            stems.insert(stem, i);
        }
    }
    drop(stems);
    ok.then(|| Rc::new(out))
}

/// Re-reports the error of an already expanded (failed) for_each value for another task.
fn report_for_each_error(t: &PlanTask, fe: &ForEach, dir: &Path, d: &mut Diags) {
    let mut scratch = Diags::new(Path::new(""));
    expand_items(t, fe, dir, &mut scratch);
    for diag in scratch.list {
        d.error(t.for_each_line, diag.message);
    }
}

fn list_items(fe: &ForEach, dir: &Path) -> Result<Vec<String>, String> {
    match fe {
        ForEach::List(items) if items.is_empty() => Err("for_each list is empty".to_string()),
        ForEach::List(items) => Ok(items.clone()),
        ForEach::Glob(pattern) => {
            let full = if Path::new(pattern).is_absolute() {
                pattern.clone()
            } else {
                let base = glob::Pattern::escape(&dir.to_string_lossy());
                format!("{}/{pattern}", base.trim_end_matches('/'))
            };
            let paths =
                glob::glob(&full).map_err(|e| format!("bad for_each glob '{pattern}': {e}"))?;
            let mut items: Vec<String> = paths
                .filter_map(Result::ok)
                .map(|p| match p.strip_prefix(dir) {
                    Ok(rel) => rel.to_string_lossy().into_owned(),
                    Err(_) => p.to_string_lossy().into_owned(),
                })
                .collect();
            items.sort();
            if items.is_empty() {
                Err(format!("for_each glob '{pattern}' matched no files"))
            } else {
                Ok(items)
            }
        }
    }
}

/// File name without directory and last extension.
pub(crate) fn stem_of(item: &str) -> String {
    Path::new(item)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| item.to_string())
}

/// Replaces `{item}`, `{stem}` and `{index}` in one pass (substituted text is not
/// rescanned). For data fields only: a `command` goes through [`CommandTemplate`].
pub(crate) fn substitute(s: &str, item: &str, stem: &str, index: usize) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('{') {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        if let Some(r) = tail.strip_prefix("{item}") {
            out.push_str(item);
            rest = r;
        } else if let Some(r) = tail.strip_prefix("{stem}") {
            out.push_str(stem);
            rest = r;
        } else if let Some(r) = tail.strip_prefix("{index}") {
            out.push_str(&index.to_string());
            rest = r;
        } else {
            out.push('{');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitution_is_one_pass() {
        assert_eq!(
            substitute("a {item} {stem} {index} {x} {print $1}", "{stem}", "s", 3),
            "a {stem} s 3 {x} {print $1}"
        );
        assert_eq!(substitute("{{item}}", "i", "s", 0), "{i}");
    }

    #[test]
    fn stems() {
        assert_eq!(stem_of("inputs/ep1.mp3"), "ep1");
        assert_eq!(stem_of("a.tar.gz"), "a.tar");
        assert_eq!(stem_of("plain"), "plain");
    }
}
