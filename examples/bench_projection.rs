//! placeholder during development
use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, Par};
use ndarray::Array2;
use rayon::prelude::*;
use std::time::Instant;
use trak::project::{DenseProjector, Distribution, Projector};

fn best_of<T>(reps: usize, mut f: impl FnMut() -> T) -> f64 {
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(f());
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}
fn main() {
    let threads = rayon::current_num_threads();
    let par = if threads > 1 {
        Par::rayon(threads)
    } else {
        Par::Seq
    };
    let big: Vec<f32> = (0..1usize << 27)
        .into_par_iter()
        .map(|i| (i % 7) as f32)
        .collect();
    let secs = best_of(5, || {
        big.par_chunks(1 << 16)
            .map(|c| c.iter().sum::<f32>())
            .sum::<f32>()
    });
    let bw = (big.len() * 4) as f64 / secs / 1e9;
    println!("bandwidth {bw:.1} GB/s");
    drop(big);
    let p = 1usize << 20;
    for k in [512, 2048] {
        for b in [32, 128] {
            let pg = 1 << 17;
            let a = Mat::<f32>::from_fn(b, pg, |i, j| ((i * 7 + j * 13) % 17) as f32 - 8.0);
            let m = Mat::<f32>::from_fn(pg, k, |i, j| ((i * 5 + j * 3) % 11) as f32 - 5.0);
            let mut c = Mat::<f32>::zeros(b, k);
            let s = best_of(3, || {
                matmul(c.as_mut(), Accum::Replace, a.as_ref(), m.as_ref(), 1.0, par)
            });
            let gemm = 2.0 * (b * pg * k) as f64 / s / 1e9;
            drop((a, m));
            let g = Array2::<f32>::from_shape_fn((b, p), |(i, j)| {
                ((i * 31 + j * 17) % 13) as f32 - 6.0
            });
            let mut out = Array2::<f32>::zeros((b, k));
            for dist in [Distribution::Rademacher, Distribution::Gaussian] {
                let proj = DenseProjector::new(p, k, dist, 0).unwrap();
                let s = best_of(2, || proj.project(0, g.view(), out.view_mut()).unwrap());
                let rate = 2.0 * (b * p * k) as f64 / s / 1e9;
                println!(
                    "dense {dist:?} B={b} k={k}: {:.0} ex/s {rate:.1} GF/s gemm {gemm:.1} ratio {:.2}",
                    b as f64 / s,
                    rate / gemm
                );
            }
        }
    }
}
