//! The yardstick every benchmark quotes its rates against: faer's GEMM on this machine, on a
//! comparable shape, measured in the same run (the machine is shared and noisy, so absolute
//! rates from another run say little).

use std::time::Instant;

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, Par};

/// The least wall time of `reps` calls of `f`, in seconds (at least one call).
pub fn best_of<T>(reps: usize, mut f: impl FnMut() -> T) -> f64 {
    (0..reps.max(1))
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(f());
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

/// faer's GEMM rate in GFLOP/s for (m × k)·(k × n) in `T` (f32 or f64), on every rayon thread
/// (sequential with one), best of `reps`. Operands hold small integers, so no denormals.
pub fn gemm_gflops<T>(m: usize, k: usize, n: usize, reps: usize) -> f64
where
    T: faer::traits::ComplexField + Copy + From<u8>,
{
    let a = Mat::<T>::from_fn(m, k, |i, j| T::from(((i * 7 + j * 13) % 17) as u8));
    let b = Mat::<T>::from_fn(k, n, |i, j| T::from(((i * 5 + j * 3) % 11) as u8));
    let mut c = Mat::<T>::zeros(m, n);
    let threads = rayon::current_num_threads();
    let par = if threads > 1 {
        Par::rayon(threads)
    } else {
        Par::Seq
    };
    let one = T::from(1u8);
    let secs = best_of(reps, || {
        matmul(c.as_mut(), Accum::Replace, a.as_ref(), b.as_ref(), one, par)
    });
    2.0 * (m as f64) * (k as f64) * (n as f64) / secs / 1e9
}

/// Streaming read bandwidth in GB/s: the sum of 1 GiB of f32 on every rayon thread, best of
/// `reps` (at least one).
pub fn read_bandwidth(reps: usize) -> f64 {
    use rayon::prelude::*;
    let v: Vec<f32> = (0..1usize << 28)
        .into_par_iter()
        .map(|i| (i % 7) as f32)
        .collect();
    let secs = best_of(reps, || {
        v.par_chunks(1 << 16)
            .map(|c| c.iter().sum::<f32>())
            .sum::<f32>()
    });
    (v.len() * 4) as f64 / secs / 1e9
}
