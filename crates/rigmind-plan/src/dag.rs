//! Plan-level dependency checks: unknown names, self-dependencies and cycles.

use std::collections::{HashMap, VecDeque};

use crate::diag::Diags;
use crate::plan::PlanTask;
use crate::suggest::did_you_mean;

/// Index of each task name (the first task of a duplicated name wins).
pub(crate) fn name_index(tasks: &[PlanTask]) -> HashMap<&str, usize> {
    let mut map = HashMap::with_capacity(tasks.len());
    for (i, t) in tasks.iter().enumerate() {
        map.entry(t.name.as_str()).or_insert(i);
    }
    map
}

/// Reports unknown dependencies, self-dependencies and cycles (each cycle once, at
/// the heading of its first task in plan order).
pub(crate) fn check(tasks: &[PlanTask], d: &mut Diags) {
    let index = name_index(tasks);
    let mut edges: Vec<Vec<usize>> = vec![Vec::new(); tasks.len()];
    for (i, t) in tasks.iter().enumerate() {
        for dep in &t.depends_on {
            match index.get(dep.as_str()) {
                Some(&j) => {
                    if !edges[i].contains(&j) {
                        edges[i].push(j);
                    }
                }
                None => d.error(
                    t.depends_on_line,
                    format!(
                        "task '{}' depends on unknown task '{dep}'{}",
                        t.name,
                        did_you_mean(dep, tasks.iter().map(|t| t.name.as_str()))
                    ),
                ),
            }
        }
    }
    for (i, t) in tasks.iter().enumerate() {
        if edges[i].contains(&i) {
            d.error(
                t.line,
                format!("task '{}' depends on itself ({0} -> {0})", t.name),
            );
        }
    }
    for scc in sccs(&edges) {
        if scc.len() < 2 {
            continue;
        }
        let start = *scc.iter().min().expect("non-empty");
        let cycle = cycle_through(start, &scc, &edges);
        let spelled: Vec<&str> = cycle.iter().map(|&i| tasks[i].name.as_str()).collect();
        d.error(
            tasks[start].line,
            format!("dependency cycle: {}", spelled.join(" -> ")),
        );
    }
}

/// Strongly connected components (iterative Tarjan).
fn sccs(edges: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let n = edges.len();
    let mut index = vec![usize::MAX; n];
    let mut low = vec![0; n];
    let mut on_stack = vec![false; n];
    let mut stack = Vec::new();
    let mut out = Vec::new();
    let mut next = 0;
    for root in 0..n {
        if index[root] != usize::MAX {
            continue;
        }
        let mut call: Vec<(usize, usize)> = vec![(root, 0)];
        index[root] = next;
        low[root] = next;
        next += 1;
        stack.push(root);
        on_stack[root] = true;
        while let Some(&mut (v, ref mut ei)) = call.last_mut() {
            if *ei < edges[v].len() {
                let w = edges[v][*ei];
                *ei += 1;
                if index[w] == usize::MAX {
                    index[w] = next;
                    low[w] = next;
                    next += 1;
                    stack.push(w);
                    on_stack[w] = true;
                    call.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
            } else {
                call.pop();
                if let Some(&(parent, _)) = call.last() {
                    low[parent] = low[parent].min(low[v]);
                }
                if low[v] == index[v] {
                    let mut comp = Vec::new();
                    while let Some(w) = stack.pop() {
                        on_stack[w] = false;
                        comp.push(w);
                        if w == v {
                            break;
                        }
                    }
                    out.push(comp);
                }
            }
        }
    }
    out
}

/// A shortest cycle from `start` back to itself inside one component: `[a, b, a]`.
fn cycle_through(start: usize, scc: &[usize], edges: &[Vec<usize>]) -> Vec<usize> {
    let members: std::collections::HashSet<usize> = scc.iter().copied().collect();
    let mut prev: HashMap<usize, usize> = HashMap::new();
    let mut queue = VecDeque::from([start]);
    while let Some(v) = queue.pop_front() {
        for &w in &edges[v] {
            if !members.contains(&w) || w == v {
                continue;
            }
            if w == start {
                let mut back = Vec::new();
                let mut cur = v;
                while cur != start {
                    back.push(cur);
                    cur = prev[&cur];
                }
                back.reverse();
                let mut cycle = vec![start];
                cycle.extend(back);
                cycle.push(start);
                return cycle;
            }
            if let std::collections::hash_map::Entry::Vacant(e) = prev.entry(w) {
                e.insert(v);
                queue.push_back(w);
            }
        }
    }
    vec![start, start]
}
