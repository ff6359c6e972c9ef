//! Noisy workloads: the same plan, with run times that are not the written
//! estimates. Real batches are like that (the GPU issue's plan had 4 s estimates
//! for scripts that took 7.5 s), and a policy must stay good when they are.
//!
//! [`truth`] gives, for a seed, the plan as it really runs: each plan task's
//! estimate is off by one factor drawn from ×0.5 to ×2 (log-uniform, the same for
//! all its items: a person misjudges a task, not an item), and each job's run time
//! is that times a heavy-tailed factor (Pareto, α = 2.5, mean 1, at most ×8). The
//! simulator runs the written plan (what the policies see) with the truth's run
//! times; the lower bound is the truth's. Deterministic: a seeded generator, no
//! global state.

use rigmind_plan::ExpandedPlan;

use crate::engine::estimate;

/// The Pareto shape of the per-job factor: heavy-tailed, finite mean.
const ALPHA: f64 = 2.5;
/// The largest per-job factor (a task 8 times its plan task's usual run time).
const MAX_TAIL: f64 = 8.0;

/// The plan as it really runs under `seed`: each job's `estimate_secs` is its real
/// run time (see the module doc).
pub fn truth(plan: &ExpandedPlan, seed: u64) -> ExpandedPlan {
    let mut out = plan.clone();
    for j in &mut out.jobs {
        let off = 2f64.powf(2.0 * unit(seed, 1, &j.plan_task_id) - 1.0);
        j.estimate_secs = Some(estimate(j.estimate_secs) * off * tail(seed, &j.name));
    }
    out
}

/// A Pareto(α) factor of mean 1 for the job `name`, capped at [`MAX_TAIL`].
fn tail(seed: u64, name: &str) -> f64 {
    let scale = (ALPHA - 1.0) / ALPHA;
    // 1 - u is in (0, 1]: never a division by zero.
    let u = 1.0 - unit(seed, 2, name);
    (scale * u.powf(-1.0 / ALPHA)).min(MAX_TAIL)
}

/// A number in [0, 1) from `seed`, a stream number and a name: FNV-1a of the name,
/// mixed by SplitMix64.
fn unit(seed: u64, stream: u64, name: &str) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut z = h ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ stream.rotate_left(32);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn factors_stay_in_their_ranges_and_average_near_one() {
        let n = 20_000;
        let mut sum = 0.0;
        for i in 0..n {
            let t = tail(7, &format!("job{i}"));
            assert!((0.6..=MAX_TAIL).contains(&t), "{t}");
            sum += t;
            let u = unit(7, 1, &format!("task{i}"));
            assert!((0.0..1.0).contains(&u));
        }
        let mean = sum / f64::from(n);
        assert!((0.9..1.1).contains(&mean), "{mean}");
        // Deterministic, and the seed matters.
        assert_eq!(tail(7, "a"), tail(7, "a"));
        assert_ne!(unit(7, 1, "a"), unit(8, 1, "a"));
    }
}
