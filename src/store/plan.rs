//! The memory plan of out-of-core scoring: how many blocks fit in one pass.

use super::records::packed_len;
use crate::error::{Error, Result};
use crate::kernel::scoring::SCORE_ROWS;

/// The memory plan of a scoring call: how many blocks fit in one pass.
///
/// Counted, in bytes: the solved targets Y_m = A_m⁻¹Ψ_mᵀ of every checkpoint (dim × m f64)
/// and the target features (m × dim f32); the largest factorisation (the Gram matrix read
/// packed, unpacked, and its Cholesky factor); one file's bytes in flight (a feature or score
/// block); the score product's per-thread f64 copy of up to 512 feature rows; and, per block
/// of a pass, its features and Q (f32) and its f64 score accumulator and Q sum. A reserve of
/// 16 MiB plus 1/16 of the budget is kept for the process itself (code, thread stacks,
/// allocator slack), so the budget bounds the whole process's peak resident set.
#[derive(Debug)]
pub(super) struct ScorePlan {
    pub(super) blocks_per_pass: usize,
    pub(super) planned_bytes: usize,
}

impl ScorePlan {
    pub(super) fn new(
        dims: &[usize],
        m: usize,
        rows: usize,
        blocks: usize,
        budget: usize,
    ) -> Result<Self> {
        let threads = rayon::current_num_threads().max(1);
        let max_dim = dims.iter().copied().max().unwrap_or(0);
        let solved: usize = dims.iter().map(|d| d * m * (8 + 4)).sum();
        let factor = max_dim * max_dim * 16 + packed_len(max_dim) * 16;
        let io = rows * (max_dim + 1).max(m) * 4 + 4096;
        let widen = threads * SCORE_ROWS.min(rows) * max_dim * 8;
        let reserve = (16 << 20) + budget / 16;
        let fixed = reserve + solved + factor + io + widen;
        let per_block = rows * (max_dim * 4 + 4 + m * 8 + 8);
        let needed = fixed + per_block;
        if needed > budget {
            return Err(Error::MemoryBudget {
                budget,
                needed,
                reason: format!(
                    "solved targets of {} checkpoints ({solved} bytes), one block of {rows} \
                     rows ({per_block} bytes) and a reserve of {reserve} bytes for the \
                     process; use smaller blocks or fewer targets per set",
                    dims.len()
                ),
            });
        }
        let blocks_per_pass = ((budget - fixed) / per_block).clamp(1, blocks.max(1));
        Ok(Self {
            blocks_per_pass,
            planned_bytes: fixed + blocks_per_pass * per_block,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    #[test]
    fn the_plan_fits_the_budget_and_grows_with_it() {
        let (dims, m, rows, blocks) = ([512, 512], 100, 4096, 40);
        let small = ScorePlan::new(&dims, m, rows, blocks, 64 * MIB).unwrap();
        let large = ScorePlan::new(&dims, m, rows, blocks, 512 * MIB).unwrap();
        assert!(small.planned_bytes <= 64 * MIB && large.planned_bytes <= 512 * MIB);
        assert!(small.blocks_per_pass >= 1);
        assert!(large.blocks_per_pass > small.blocks_per_pass);
    }

    #[test]
    fn passes_never_exceed_the_block_count() {
        let plan = ScorePlan::new(&[64], 10, 100, 3, 1 << 30).unwrap();
        assert_eq!(plan.blocks_per_pass, 3);
    }

    #[test]
    fn a_budget_below_one_block_is_refused_with_the_need() {
        let err = ScorePlan::new(&[1024], 1000, 4096, 10, 32 * MIB).unwrap_err();
        match err {
            Error::MemoryBudget {
                budget,
                needed,
                reason,
            } => {
                assert_eq!(budget, 32 * MIB);
                assert!(needed > budget);
                assert!(reason.contains("one block of 4096 rows"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_plan_counts_every_checkpoint_s_solved_targets() {
        let one = ScorePlan::new(&[256], 500, 1024, 10, 1 << 32).unwrap();
        let four = ScorePlan::new(&[256; 4], 500, 1024, 10, 1 << 32).unwrap();
        assert_eq!((one.blocks_per_pass, four.blocks_per_pass), (10, 10));
        // Y (f64) and Ψ (f32) of three more checkpoints: 256 × 500 × 12 bytes each.
        assert_eq!(four.planned_bytes - one.planned_bytes, 3 * 256 * 500 * 12);
    }
}
