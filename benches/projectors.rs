//! Criterion benchmarks of the projection and kernel hot paths (`cargo bench --bench projectors`).
//!
//! Throughput is reported in examples (projection) or rows (kernel) per second. Shapes are
//! smaller than `examples/bench_projection.rs` (which also measures the machine's GEMM and
//! bandwidth limits and prints the ratios) so that a criterion run stays short.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ndarray::Array2;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use trak::kernel::{Factor, add_scores, gram};
use trak::model::{LayerFactors, LinearLayer};
use trak::project::{DenseProjector, Distribution, FactoredProjector, Projector, SparseProjector};

fn random(rows: usize, cols: usize, seed: u64) -> Array2<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Array2::from_shape_simple_fn((rows, cols), || rng.random_range(-1.0f32..1.0))
}

fn projection(c: &mut Criterion) {
    let (p, k) = (1usize << 18, 2048);
    let mut group = c.benchmark_group("project");
    group.sample_size(10);
    for b in [32usize, 128] {
        let g = random(b, p, 1);
        let mut out = Array2::zeros((b, k));
        group.throughput(Throughput::Elements(b as u64));
        for (name, dist) in [
            ("dense-rademacher", Distribution::Rademacher),
            ("dense-gaussian", Distribution::Gaussian),
        ] {
            let proj = DenseProjector::new(p, k, dist, 0).unwrap();
            group.bench_function(BenchmarkId::new(name, format!("B{b}-p{p}-k{k}")), |bench| {
                bench.iter(|| proj.project(0, g.view(), out.view_mut()).unwrap())
            });
        }
        for s in [1usize, 4] {
            let proj = SparseProjector::new(p, k, s, 0).unwrap();
            group.bench_function(
                BenchmarkId::new(format!("sparse-s{s}"), format!("B{b}-p{p}-k{k}")),
                |bench| bench.iter(|| proj.project(0, g.view(), out.view_mut()).unwrap()),
            );
        }
        let layer = LinearLayer {
            out_dim: 512,
            in_dim: 512,
        };
        let mats = FactoredProjector::new(&[layer], k, 0)
            .unwrap()
            .at_checkpoint(0);
        let f = [LayerFactors {
            positions: 1,
            acts: random(b, 512, 2),
            deltas: random(b, 512, 3),
        }];
        let mut out = Array2::zeros((b, mats.output_dim()));
        group.bench_function(
            BenchmarkId::new("factored", format!("B{b}-p{p}-k{k}")),
            |bench| bench.iter(|| mats.project(&f, out.view_mut()).unwrap()),
        );
    }
    group.finish();
}

fn kernel(c: &mut Criterion) {
    let (n, k, m) = (8192, 1024, 256);
    let phi = random(n, k, 4);
    let mut group = c.benchmark_group("kernel");
    group.sample_size(10);
    group.throughput(Throughput::Elements(n as u64));
    group.bench_function(BenchmarkId::new("gram", format!("n{n}-k{k}")), |bench| {
        bench.iter(|| gram(phi.view()))
    });
    let kmat = gram(phi.view());
    let lambda = kmat.diag().sum() / n as f64;
    group.bench_function(BenchmarkId::new("cholesky", format!("k{k}")), |bench| {
        bench.iter(|| Factor::new(kmat.view(), lambda, 0).unwrap())
    });
    let factor = Factor::new(kmat.view(), lambda, 0).unwrap();
    let y = factor.solve_targets(random(m, k, 5).view()).unwrap();
    let mut acc = Array2::<f64>::zeros((n, m));
    group.bench_function(
        BenchmarkId::new("scores", format!("n{n}-k{k}-m{m}")),
        |bench| bench.iter(|| add_scores(phi.view(), &y, acc.view_mut()).unwrap()),
    );
    group.finish();
}

criterion_group!(benches, projection, kernel);
criterion_main!(benches);
