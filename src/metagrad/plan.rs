//! How much of the training trajectory to keep: the REPLAY plan, checked against the memory
//! limit before anything is allocated.

use crate::attribute::memory::{self, bytes};
use crate::error::Result;

/// Which states the first pass keeps, and what the whole computation holds at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayPlan {
    /// Training steps T.
    pub steps: usize,
    /// Steps per replayed segment K (T when every state is kept).
    pub segment: usize,
    /// Whether the first pass keeps every state θ_t (no replay), or one (θ, v) checkpoint at
    /// the start of each segment (each segment replayed once per pass of targets).
    pub keeps_every_state: bool,
    /// Bytes the plan holds at its peak (trajectory + adjoint buffers).
    pub bytes: usize,
}

/// The trajectory's and the adjoint's bytes for `steps` steps of `p` parameters, `targets`
/// targets per pass and `n_train` examples, under `limit` (None: the machine's memory).
///
/// Every state is kept when it fits; otherwise segments of K ≈ √(2T) steps, which
/// minimise ⌈T/K⌉·2p + K·p floats. Either way each step is replayed at most once per pass, so
/// the choice changes memory, not the number of steps computed (beyond the replay itself).
pub(crate) fn plan(
    steps: usize,
    p: usize,
    targets: usize,
    n_train: usize,
    limit: Option<usize>,
) -> Result<ReplayPlan> {
    let threads = rayon::current_num_threads().min(targets.max(1));
    let adjoint = [
        (
            "adjoint of θ (f64) and directions (f32)",
            bytes(targets, bytes(p, 12)),
        ),
        (
            "HVP products, per thread (f32)",
            bytes(threads, bytes(p, 4)),
        ),
        ("metagradients (f64)", bytes(n_train, bytes(targets, 8))),
    ];
    let adjoint_bytes = adjoint.iter().fold(0usize, |s, a| s.saturating_add(a.1));
    let all = bytes(steps, bytes(p, 4));
    let budget = limit.or_else(memory::machine_memory);
    if budget.is_none_or(|b| all.saturating_add(adjoint_bytes) <= b) {
        return Ok(ReplayPlan {
            steps,
            segment: steps,
            keeps_every_state: true,
            bytes: all.saturating_add(adjoint_bytes),
        });
    }
    let segment = (((2 * steps) as f64).sqrt().round() as usize).clamp(1, steps.max(1));
    let checkpoints = bytes(steps.div_ceil(segment), bytes(2 * p, 4));
    let replay = bytes(segment, bytes(p, 4));
    let mut parts = vec![
        ("checkpoints (θ, v)", checkpoints),
        ("one segment's states", replay),
    ];
    parts.extend(adjoint);
    memory::check(
        limit,
        &parts,
        "fewer targets per pass need a smaller adjoint",
    )?;
    Ok(ReplayPlan {
        steps,
        segment,
        keeps_every_state: false,
        bytes: checkpoints
            .saturating_add(replay)
            .saturating_add(adjoint_bytes),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_everything_when_it_fits_and_segments_otherwise() {
        let p = 1000;
        let all = plan(100, p, 4, 50, Some(1 << 30)).unwrap();
        assert!(all.keeps_every_state);
        assert_eq!(all.segment, 100);
        // Every state: 100 × 1000 × 4 = 400 kB; the adjoint ≤ 4·1000·(12 + 4) + 50·4·8 ≈ 65.6 kB.
        let tight = plan(100, p, 4, 50, Some(300_000)).unwrap();
        assert!(!tight.keeps_every_state);
        assert_eq!(tight.segment, 14);
        assert!(tight.bytes <= 300_000);
        assert!(plan(100, p, 4, 50, Some(50_000)).is_err());
    }
}
