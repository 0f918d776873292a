//! Featurisation throughput of the MNIST MLP (784-128-10, p = 101,770).
//!
//! `cargo run --release --example featurize_throughput -- [k] [batch] [n] [projector]`
//! (defaults k = 2048, batch = 64, n = 512, projector `dense`; also `gaussian`, `sparse`
//! (s = 1, the default), `sparse:<s>`, `factored`). Thread count: `RAYON_NUM_THREADS`.
//! Prints the examples/s of the whole featurisation (model gradients or layer factors,
//! projection, Q and finiteness checks), next to the machine's own f32 GEMM rate on the dense
//! projection's shape (faer, stored matrix).

use std::time::Instant;

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, Par};
use trak::Trak;
use trak::data::Dataset;
use trak::models::Mlp;
use trak::output::Margin;
use trak::project::ProjectorKind;

fn main() -> trak::Result<()> {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let kind_name = raw.get(3).cloned().unwrap_or_else(|| "dense".into());
    let kind = match kind_name.split_once(':') {
        Some(("sparse", s)) => ProjectorKind::Sparse {
            s: s.parse().expect("sparse:<s>"),
        },
        _ => match kind_name.as_str() {
            "dense" => ProjectorKind::Rademacher,
            "gaussian" => ProjectorKind::Gaussian,
            "sparse" => ProjectorKind::SPARSE,
            "factored" => ProjectorKind::Factored,
            other => panic!("unknown projector {other:?}"),
        },
    };
    let args: Vec<usize> = raw
        .iter()
        .take(3)
        .map(|a| a.parse().expect("integer argument"))
        .collect();
    let k = args.first().copied().unwrap_or(2048);
    let batch = args.get(1).copied().unwrap_or(64);
    let n = args.get(2).copied().unwrap_or(512);
    let threads = rayon::current_num_threads();
    let data = Dataset::mnist_5k()?;
    let samples = data.samples()[..n].to_vec();
    let model = Mlp::new(&[784, 128, 10], Margin, 1)?;
    let p = trak::Model::num_params(&model);
    let trak = Trak::builder()
        .proj_dim(k)
        .projector(kind)
        .batch_size(batch)
        .build()?;

    // Warm-up (page faults, CPU frequency), then the timed run.
    trak.featurizer()
        .featurize(0, &model, &samples[..batch.min(n)])?;
    let t = Instant::now();
    let mut feats = trak.featurizer();
    feats.featurize(0, &model, &samples)?;
    let secs = t.elapsed().as_secs_f64();
    let ex_per_s = n as f64 / secs;
    let gflops = 2.0 * p as f64 * k as f64 * ex_per_s / 1e9;

    // The machine's f32 GEMM rate on the projection's shape (B × p) · (p × k), P stored.
    let a = Mat::<f32>::from_fn(batch, p, |i, j| ((i * 7 + j * 13) % 17) as f32 - 8.0);
    let b = Mat::<f32>::from_fn(p, k, |i, j| ((i * 5 + j * 3) % 11) as f32 - 5.0);
    let mut c = Mat::<f32>::zeros(batch, k);
    let par = if threads > 1 {
        Par::rayon(threads)
    } else {
        Par::Seq
    };
    matmul(c.as_mut(), Accum::Replace, a.as_ref(), b.as_ref(), 1.0, par);
    let reps = 3;
    let t = Instant::now();
    for _ in 0..reps {
        matmul(c.as_mut(), Accum::Replace, a.as_ref(), b.as_ref(), 1.0, par);
    }
    let gemm = 2.0 * (batch * p * k * reps) as f64 / t.elapsed().as_secs_f64() / 1e9;
    println!(
        "FEATURIZE model=mlp-784-128-10 projector={kind_name} p={p} k={k} B={batch} n={n} threads={threads} ex_per_s={ex_per_s:.1} \
         gflops={gflops:.1} gemm_gflops={gemm:.1} ratio_to_gemm={:.2}",
        gflops / gemm
    );
    Ok(())
}
