//! The kernel step: everything between features and scores, in f64 via `faer`.
//!
//! Features are f32; everything here is f64. Per checkpoint, the Gram matrix is K = ΦᵀΦ
//! ([`gram`]), or ΦᵀWΦ under a [`Weighting`] ([`gram_weighted`]); the regularised matrix A = K + λI ([`Ridge`] gives λ) is factorised once by
//! Cholesky ([`Factor`], never inverted); target features Ψ are solved, Y = A⁻¹Ψᵀ, and the
//! scores are S = Φ Y, the n × k matrix being read once ([`add_scores`]). Across checkpoints
//! the scores are averaged and weighted by the average Q.
//!
//! The in-memory [`crate::TrakIndex`] and the on-disk [`crate::store::Run`] both go through the
//! functions of one module (`kernel/scoring.rs`), so the two paths compute the same numbers in the same order.
//!
//! Determinism: faer runs single-threaded (`Par::Seq`) inside tiles of a fixed partition, and
//! rayon runs the tiles. The partition depends only on the problem's shape, so results are
//! bit-identical whatever the number of threads.

mod factor;
mod gram;
mod ridge;
pub(crate) mod scoring;
mod weighting;

pub use factor::Factor;
pub use gram::{gram, gram_weighted};
pub use ridge::{DEFAULT_RIDGE, Ridge};
pub use scoring::add_scores;
pub use weighting::Weighting;
