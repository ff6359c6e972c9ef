//! How far the grouped DAG of a projection has come: for each group of
//! [`RigView::work`], how many items are waiting, ready, running or ended, and which
//! items an ended chunk releases (item-wise: as many as ended; all-of: all, once the
//! whole group waited for has ended). The projection's cards take work from here.

use std::collections::BTreeSet;

use rigmind_types::TaskClass;

use crate::view::{RigView, Work};

/// A class's place in the per-class arrays: script 0, llm 1, cpu (and any other) 2.
pub(super) fn class_slot(c: TaskClass) -> usize {
    match c {
        TaskClass::Script => 0,
        TaskClass::Llm => 1,
        _ => 2,
    }
}

/// The DAG's progress in one projection.
pub(super) struct Progress<'v> {
    work: &'v [Work],
    /// Items of each group not yet ended (running ones included).
    unended: Vec<usize>,
    /// Items of each group ready and not taken.
    ready_n: Vec<usize>,
    /// Items of each group made ready so far (taken or not).
    released: Vec<usize>,
    /// All-of dependencies of each group not yet ended.
    unmet_all: Vec<usize>,
    /// For each item-wise dependency (in the order of `deps`, flattened, from
    /// `first_each[g]`): how many of the group's items it no longer holds back.
    credit: Vec<usize>,
    first_each: Vec<usize>,
    /// The groups waiting on each group: (group, its item-wise slot in `credit`).
    dependents: Vec<Vec<(usize, Option<usize>)>>,
    /// Groups with ready items, by class slot, in claim order ([`Work::claim`],
    /// then index): read through [`Progress::ready_groups`]. The llm slot stays
    /// empty: llm groups are in `ready_by_model`.
    ready: [BTreeSet<Ready>; 3],
    /// The llm groups with ready items, by model, so that a loaded card finds its
    /// model's work without passing over the others' ([`Progress::ready_of`]).
    ready_by_model: Vec<BTreeSet<Ready>>,
    /// Items ready and not taken, by class slot (of all its groups).
    pub(super) ready_total: [usize; 3],
    /// Chunks running, and items waiting on dependencies, by class slot.
    pub(super) running: [usize; 3],
    pub(super) waiting: [usize; 3],
    /// Items not yet ended, of all groups.
    pub(super) left: usize,
    /// Each group's llm model (an index into the projection's models).
    model_of: Vec<Option<usize>>,
    /// Per model, its llm work ready and not taken, and not yet ended: kept as the
    /// DAG moves, so that the projection's model step asks in O(models), not by
    /// walking the groups at every step.
    by_model: Vec<ModelWork>,
}

/// A ready group in claim order: its claim, then its index.
type Ready = ((u8, u64), usize);

/// One model's llm work at a moment of the projection: items (exact, for "is
/// there any") and seconds (for "how much").
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct ModelWork {
    pub(super) ready_n: usize,
    pub(super) ready_secs: f64,
    pub(super) left_n: usize,
    pub(super) left_secs: f64,
}

impl<'v> Progress<'v> {
    /// The start: running items end after what they have left (the caller starts
    /// them), items whose groups wait for nothing unended are ready, the rest wait.
    /// `model_of`: each group's model among `models` (`None`: not llm work).
    pub(super) fn new(view: &'v RigView, model_of: Vec<Option<usize>>, models: usize) -> Self {
        let work = &view.work[..];
        let n = work.len();
        let mut p = Progress {
            work,
            unended: work.iter().map(|w| w.items).collect(),
            ready_n: vec![0; n],
            released: vec![0; n],
            unmet_all: vec![0; n],
            credit: Vec::new(),
            first_each: Vec::with_capacity(n),
            dependents: vec![Vec::new(); n],
            ready: Default::default(),
            ready_total: [0; 3],
            running: [0; 3],
            waiting: [0; 3],
            left: work.iter().map(|w| w.items).sum(),
            model_of,
            by_model: vec![ModelWork::default(); models],
            ready_by_model: vec![BTreeSet::new(); models],
        };
        for (g, w) in work.iter().enumerate() {
            if let Some(m) = p.model_of[g] {
                p.by_model[m].left_n += w.items;
                p.by_model[m].left_secs += w.items as f64 * w.secs.max(0.0);
            }
        }
        for (g, w) in work.iter().enumerate() {
            p.first_each.push(p.credit.len());
            if w.running {
                // Put in the queue by hand before its dependencies ended, and
                // claimed: it waits for nothing.
                continue;
            }
            for d in w.deps.iter().filter(|d| d.on < n && d.on != g) {
                match d.each {
                    Some(held) => {
                        p.dependents[d.on].push((g, Some(p.credit.len())));
                        p.credit.push(w.items.saturating_sub(held));
                    }
                    None => {
                        p.dependents[d.on].push((g, None));
                        p.unmet_all[g] += 1;
                    }
                }
            }
            p.waiting[class_slot(w.class)] += w.items;
            p.release(g);
        }
        p
    }

    /// Items of group `g` ready and not taken.
    pub(super) fn ready_items(&self, g: usize) -> usize {
        self.ready_n[g]
    }

    /// How many of group `g`'s items its dependencies let start by now.
    fn available(&self, g: usize) -> usize {
        if self.unmet_all[g] > 0 {
            return 0;
        }
        let end = self
            .first_each
            .get(g + 1)
            .copied()
            .unwrap_or(self.credit.len());
        self.credit[self.first_each[g]..end]
            .iter()
            .fold(self.work[g].items, |a, c| a.min(*c))
    }

    /// Makes ready what group `g`'s dependencies now allow.
    fn release(&mut self, g: usize) {
        let new = self.available(g).saturating_sub(self.released[g]);
        if new == 0 {
            return;
        }
        let slot = class_slot(self.work[g].class);
        self.released[g] += new;
        self.ready_n[g] += new;
        self.ready_total[slot] += new;
        if let Some(m) = self.model_of[g] {
            self.by_model[m].ready_n += new;
            self.by_model[m].ready_secs += new as f64 * self.work[g].secs.max(0.0);
        }
        self.waiting[slot] = self.waiting[slot].saturating_sub(new);
        let key = (self.work[g].claim, g);
        match self.model_of[g] {
            Some(m) => self.ready_by_model[m].insert(key),
            None => self.ready[slot].insert(key),
        };
    }

    /// The groups of class slot `slot` with ready items: in the order workers would
    /// claim them, but for llm work, which comes model by model.
    pub(super) fn ready_groups(&self, slot: usize) -> impl Iterator<Item = usize> + '_ {
        let by_model: &[BTreeSet<Ready>] = if slot == 1 { &self.ready_by_model } else { &[] };
        self.ready[slot]
            .iter()
            .chain(by_model.iter().flatten())
            .map(|&(_, g)| g)
    }

    /// The groups a card in class slot `slot` holding `model` (llm cards) may take,
    /// with ready items, in claim order.
    pub(super) fn ready_of(
        &self,
        slot: usize,
        model: Option<usize>,
    ) -> impl Iterator<Item = usize> + '_ {
        // A loaded card holding no model of the work finds the (empty) llm slot.
        let set = match (slot, model) {
            (1, Some(m)) => &self.ready_by_model[m],
            _ => &self.ready[slot],
        };
        set.iter().map(|&(_, g)| g)
    }

    /// Whether no group of class slot `slot` has ready items.
    pub(super) fn none_ready(&self, slot: usize) -> bool {
        self.ready[slot].is_empty()
            && (slot != 1 || self.ready_by_model.iter().all(|s| s.is_empty()))
    }

    /// Takes `count` ready items of group `g` as one chunk (at least one is ready).
    pub(super) fn take(&mut self, g: usize, count: usize) {
        let slot = class_slot(self.work[g].class);
        self.ready_n[g] -= count;
        self.ready_total[slot] -= count;
        if let Some(m) = self.model_of[g] {
            self.by_model[m].ready_n -= count;
            self.by_model[m].ready_secs -= count as f64 * self.work[g].secs.max(0.0);
        }
        if self.ready_n[g] == 0 {
            let key = (self.work[g].claim, g);
            match self.model_of[g] {
                Some(m) => self.ready_by_model[m].remove(&key),
                None => self.ready[slot].remove(&key),
            };
        }
        self.running[slot] += 1;
    }

    /// A chunk of `count` items of group `g` starts running now without being
    /// taken from the ready ones: a running job of the view.
    pub(super) fn start_running(&mut self, g: usize) {
        self.running[class_slot(self.work[g].class)] += 1;
    }

    /// A chunk of `count` items of group `g` ended: what waited on them is released.
    pub(super) fn end(&mut self, g: usize, count: usize) {
        self.left -= count;
        if let Some(m) = self.model_of[g] {
            self.by_model[m].left_n -= count;
            self.by_model[m].left_secs -= count as f64 * self.work[g].secs.max(0.0);
        }
        self.unended[g] -= count;
        self.running[class_slot(self.work[g].class)] -= 1;
        for k in 0..self.dependents[g].len() {
            let (h, each) = self.dependents[g][k];
            match each {
                Some(c) => self.credit[c] += count,
                None if self.unended[g] == 0 => self.unmet_all[h] -= 1,
                None => continue,
            }
            self.release(h);
        }
    }

    /// Model `m`'s llm work now.
    pub(super) fn model_work(&self, m: usize) -> ModelWork {
        self.by_model[m]
    }

    /// Groups with items not yet ended.
    pub(super) fn unended(&self, g: usize) -> bool {
        self.unended[g] > 0
    }
}
