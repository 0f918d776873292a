//! Timings of the hot paths against the machine's own GEMM rate, measured in the same run.
//!
//! `cargo bench --bench hot_paths` (thread count: `RAYON_NUM_THREADS`). Prints one line per
//! kernel: achieved GFLOP/s and its ratio to faer's multi-threaded GEMM on a comparable shape
//! (f32 for the projection, f64 for the kernel step). No assertion: the machine is shared.

use ndarray::Array2;
use trak::kernel::{Factor, add_scores, gram};
use trak::project::{DenseProjector, Distribution, Projector};
use trak_demo::yardstick::{best_of, gemm_gflops};

fn main() {
    let threads = rayon::current_num_threads();
    // Projection: B × p gradients onto k columns.
    for (b, p, k, dist) in [
        (64, 101_770, 2048, Distribution::Rademacher),
        (128, 1 << 20, 2048, Distribution::Rademacher),
        (64, 101_770, 2048, Distribution::Gaussian),
    ] {
        let proj = DenseProjector::new(p, k, dist, 0).unwrap();
        let g =
            Array2::<f32>::from_shape_fn((b, p), |(i, j)| ((i * 31 + j * 17) % 13) as f32 - 6.0);
        let mut out = Array2::<f32>::zeros((b, k));
        let secs = best_of(2, || proj.project(0, g.view(), out.view_mut()).unwrap());
        let rate = 2.0 * (b * p * k) as f64 / secs / 1e9;
        let limit = gemm_gflops::<f32>(b, p.min(1 << 18), k, 3);
        println!(
            "project {dist:?} B={b} p={p} k={k} threads={threads}: {:.0} ex/s, {rate:.1} GFLOP/s, f32 GEMM {limit:.1} GFLOP/s, ratio {:.2}",
            b as f64 / secs,
            rate / limit
        );
    }
    // Kernel step: Gram (n k²), Cholesky (k³/3), score product (n k m).
    let (n, k) = (4000, 2048);
    let phi = Array2::<f32>::from_shape_fn((n, k), |(i, j)| {
        (((i * 7 + j * 3) % 23) as f32 - 11.0) / 11.0
    });
    let limit = gemm_gflops::<f64>(k, n, k, 3);
    let secs = best_of(2, || gram(phi.view()));
    let rate = 2.0 * (n * k * k) as f64 / 2.0 / secs / 1e9; // symmetric: half the products
    println!(
        "gram n={n} k={k}: {secs:.2} s, {rate:.1} GFLOP/s, f64 GEMM {limit:.1} GFLOP/s, ratio {:.2}",
        rate / limit
    );
    let kmat = gram(phi.view());
    let trace: f64 = kmat.diag().sum();
    let secs = best_of(2, || {
        Factor::new(kmat.view(), 0.1 * trace / k as f64, 0).unwrap()
    });
    println!(
        "cholesky k={k}: {secs:.2} s, {:.1} GFLOP/s (single-threaded by design)",
        (k as f64).powi(3) / 3.0 / secs / 1e9
    );
    let factor = Factor::new(kmat.view(), 0.1 * trace / k as f64, 0).unwrap();
    // Score product S = Φ Y at the shape: n = 100,000, k = 2048, m = 1,000, against
    // faer's multi-threaded f64 GEMM on (8192 × k)·(k × m).
    let (n, m) = (100_000, 1000);
    let phi = Array2::<f32>::from_shape_fn((n, k), |(i, j)| {
        (((i * 7 + j * 3) % 23) as f32 - 11.0) / 11.0
    });
    let psi = phi.slice(ndarray::s![..m, ..]).to_owned();
    let y = factor.solve_targets(psi.view()).unwrap();
    let limit = gemm_gflops::<f64>(8192, k, m, 3);
    let mut acc = Array2::<f64>::zeros((n, m));
    let secs = best_of(2, || add_scores(phi.view(), &y, acc.view_mut()).unwrap());
    let rate = 2.0 * (n * k * m) as f64 / secs / 1e9;
    println!(
        "scores n={n} k={k} m={m}: {secs:.2} s, {rate:.1} GFLOP/s, f64 GEMM {limit:.1} GFLOP/s, ratio {:.2}",
        rate / limit
    );
}
