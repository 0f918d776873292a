//! Projection throughput against this machine's own limits, both measured in the same run.
//!
//! ```text
//! cargo run --release --example bench_projection            # thread count: RAYON_NUM_THREADS
//! cargo run --release --example bench_projection -- --reps 3
//! ```
//!
//! Limits, measured first:
//! - **f32 GEMM rate**: faer's multi-threaded GEMM on the projection's shape with the matrix
//!   stored, (B × p′)·(p′ × k) with p′ = min(p, 2¹⁷) (a stored 2²⁰ × 2048 matrix would be 8 GB;
//!   the rate does not depend on the inner dimension at these sizes).
//! - **memory read bandwidth**: a streaming f32 sum over 1 GiB, all threads.
//!
//! Then one line per case, exactly
//! `PROJ kind=<dense|sparse|factored> B=<batch> p=<params> k=<k> ex_per_s=<x> ratio_to_limit=<r>`:
//! - dense (Rademacher, the default): ratio = achieved 2·B·p·k flop/s ÷ GEMM rate;
//! - sparse (the default s = 1) and factored: ratio = the gradient bytes B·p·4 ÷ time ÷
//!   bandwidth, i.e. the fraction of the rate at which the gradients could merely be read once.
//!   The factored projector never forms the gradients (it reads per-layer factors, far fewer
//!   bytes), so its ratio can exceed 1.
//!
//! Cases: p = 2²⁰ (for factored: one 1024 × 1024 linear layer), k ∈ {512, 2048},
//! B ∈ {32, 128}; then the MNIST MLP (784-128-10, p = 101,770; real MNIST inputs, gradients
//! or layer factors computed beforehand, only the projection timed). Lines starting `EXTRA`
//! add the Gaussian dense projector and the other sparse s. Every time is the best of `--reps`
//! runs (default 2). No assertion: the machine is shared.

use ndarray::Array2;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use trak::Model;
use trak::model::{FactoredModel, LayerFactors, LinearLayer};
use trak::models::Mlp;
use trak::output::Margin;
use trak::project::{
    DenseProjector, Distribution, FactoredMatrices, FactoredProjector, Projector, ProjectorKind,
    SparseProjector,
};
use trak_demo::yardstick::{self, best_of, read_bandwidth};

/// The default sparse projector's s.
const DEFAULT_S: usize = match ProjectorKind::SPARSE {
    ProjectorKind::Sparse { s } => s,
    _ => panic!("the default sparse kind is sparse"),
};

/// faer f32 GEMM GFLOP/s on (b × p′)·(p′ × k), all threads, p′ = min(p, 2¹⁷).
fn gemm_gflops(b: usize, p: usize, k: usize, reps: usize) -> f64 {
    yardstick::gemm_gflops::<f32>(b, p.min(1 << 17), k, reps + 1)
}

struct Limits {
    bandwidth: f64,
    reps: usize,
}

impl Limits {
    fn line(&self, kind: &str, b: usize, p: usize, k: usize, secs: f64, gemm: Option<f64>) {
        let ex = b as f64 / secs;
        let ratio = match gemm {
            Some(g) => 2.0 * (b * p * k) as f64 / secs / 1e9 / g,
            None => (b * p * 4) as f64 / secs / 1e9 / self.bandwidth,
        };
        println!("PROJ kind={kind} B={b} p={p} k={k} ex_per_s={ex:.1} ratio_to_limit={ratio:.2}");
    }
}

fn dense(p: usize, k: usize, dist: Distribution, g: &Array2<f32>, reps: usize) -> f64 {
    let proj = DenseProjector::new(p, k, dist, 0).unwrap();
    let mut out = Array2::zeros((g.nrows(), k));
    best_of(reps, || proj.project(0, g.view(), out.view_mut()).unwrap())
}

fn sparse(p: usize, k: usize, s: usize, g: &Array2<f32>, reps: usize) -> f64 {
    let proj = SparseProjector::new(p, k, s, 0).unwrap();
    let mut out = Array2::zeros((g.nrows(), k));
    best_of(reps, || proj.project(0, g.view(), out.view_mut()).unwrap())
}

fn factored(mats: &FactoredMatrices, f: &[LayerFactors], b: usize, reps: usize) -> f64 {
    let mut out = Array2::zeros((b, mats.output_dim()));
    best_of(10 * reps, || mats.project(f, out.view_mut()).unwrap())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let reps = args
        .windows(2)
        .find(|w| w[0] == "--reps")
        .map_or(2, |w| w[1].parse().expect("--reps takes an integer"));
    let threads = rayon::current_num_threads();
    let bandwidth = read_bandwidth(reps);
    println!("LIMIT threads={threads} read_bandwidth_gb_s={bandwidth:.2}");
    let lim = Limits { bandwidth, reps };
    let mut rng = ChaCha8Rng::seed_from_u64(0);

    // Synthetic: p = 2^20.
    let p = 1usize << 20;
    let layer = LinearLayer {
        out_dim: 1024,
        in_dim: 1024,
    };
    for k in [512, 2048] {
        for b in [32, 128] {
            let gemm = gemm_gflops(b, p, k, lim.reps);
            println!("LIMIT B={b} k={k} f32_gemm_gflops={gemm:.1}");
            let g = Array2::from_shape_simple_fn((b, p), || rng.random_range(-1.0f32..1.0));
            let secs = dense(p, k, Distribution::Rademacher, &g, lim.reps);
            lim.line("dense", b, p, k, secs, Some(gemm));
            let secs = sparse(p, k, DEFAULT_S, &g, lim.reps);
            lim.line("sparse", b, p, k, secs, None);
            let fp = FactoredProjector::new(&[layer], k, 0).unwrap();
            let mats = fp.at_checkpoint(0);
            let f = [LayerFactors {
                positions: 1,
                acts: Array2::from_shape_simple_fn((b, 1024), || rng.random_range(-1.0f32..1.0)),
                deltas: Array2::from_shape_simple_fn((b, 1024), || rng.random_range(-1.0f32..1.0)),
            }];
            let secs = factored(&mats, &f, b, lim.reps);
            lim.line("factored", b, p, k, secs, None);
            for s in [1, 2, 4, 8].into_iter().filter(|&s| s != DEFAULT_S) {
                let secs = sparse(p, k, s, &g, lim.reps);
                let bw = (b * p * 4) as f64 / secs / 1e9;
                println!(
                    "EXTRA kind=sparse-s{s} B={b} p={p} k={k} ex_per_s={:.1} ratio_to_limit={:.2}",
                    b as f64 / secs,
                    bw / bandwidth
                );
            }
            let secs = dense(p, k, Distribution::Gaussian, &g, lim.reps);
            println!(
                "EXTRA kind=dense-gaussian B={b} p={p} k={k} ex_per_s={:.1} ratio_to_limit={:.2}",
                b as f64 / secs,
                2.0 * (b * p * k) as f64 / secs / 1e9 / gemm
            );
        }
    }

    // The MNIST MLP: real inputs, gradients and factors computed once, projection timed.
    let data = trak_demo::mnist_5k().expect("embedded MNIST");
    let model = Mlp::new(&[784, 128, 10], Margin, 1).unwrap();
    let p = model.num_params();
    let samples = data.samples();
    for k in [512, 2048] {
        for b in [32, 128] {
            let batch = &samples[..b];
            let mut g = Array2::zeros((b, p));
            model.output_grads(batch, g.view_mut()).unwrap();
            let gemm = gemm_gflops(b, p, k, lim.reps);
            println!("LIMIT B={b} k={k} f32_gemm_gflops={gemm:.1} (MLP shape)");
            let secs = dense(p, k, Distribution::Rademacher, &g, lim.reps);
            lim.line("dense", b, p, k, secs, Some(gemm));
            let secs = sparse(p, k, DEFAULT_S, &g, lim.reps);
            lim.line("sparse", b, p, k, secs, None);
            let fp = FactoredProjector::new(&model.linear_layers(), k, 0).unwrap();
            let f = model.layer_factors(batch).unwrap();
            let secs = factored(&fp.at_checkpoint(0), &f, b, lim.reps);
            lim.line("factored", b, p, k, secs, None);
        }
    }
}
