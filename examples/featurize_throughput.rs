//! Featurisation throughput of the MNIST MLP (784-128-10, p = 101,770).
//!
//! `cargo run --release --example featurize_throughput -- [k] [batch] [n] [projector]`
//! (defaults k = 2048, batch = 64, n = 512, projector `dense`; also `gaussian`, `sparse`
//! (s = 1, the default), `sparse:<s>`, `factored[:expansion]`, `factored-small`). n may exceed the 5,000 digits: they are
//! used in turn. Thread count: `RAYON_NUM_THREADS`.
//! Prints the examples/s of the whole featurisation (model gradients or layer factors,
//! projection, Q and finiteness checks; best of 3 runs when a run takes under 2 s), next to the machine's own f32 GEMM rate on the dense
//! projection's shape (faer, stored matrix). With the factored projector it also prints
//! `FACTORED threads=… ex_per_s=… fwd_bwd_ex_per_s=… ratio=…`: the model's layer-factor pass
//! alone (forward and backward, same batches, same run) and end-to-end / that.

use std::time::Instant;

use trak::Trak;
use trak::models::Mlp;
use trak::output::Margin;
use trak_demo::cli::{Args, parse_projector};
use trak_demo::yardstick::gemm_gflops;

fn main() -> trak::Result<()> {
    let args = Args::from_env();
    let k = args.positional_or(0, "k", 2048usize)?;
    let batch = args.positional_or(1, "batch", 64usize)?;
    let n = args.positional_or(2, "n", 512usize)?;
    let kind_name: String = args.positional_or(3, "projector", "dense".to_string())?;
    let kind = parse_projector(&kind_name)?;
    let threads = rayon::current_num_threads();
    // n examples from MNIST-5k, cycling through the 5,000 digits when n is larger (the rate
    // does not depend on which digits are featurised).
    let digits = trak_demo::mnist_5k()?.samples();
    let samples: Vec<_> = digits.iter().cycle().take(n).cloned().collect();
    let model = Mlp::new(&[784, 128, 10], Margin, 1)?;
    let p = trak::Model::num_params(&model);
    let trak = Trak::builder()
        .proj_dim(k)
        .projector(kind)
        .batch_size(batch)
        .build()?;

    // Warm-up (page faults, CPU frequency, and every worker thread's allocator arena: a few
    // batches per thread), then the timed runs: the best of 3 when a run takes under 2 s
    // (this machine is shared; one short run varies by ±20 %), else one.
    let warm = (8 * batch * threads).min(n);
    trak.featurizer().featurize(0, &model, &samples[..warm])?;
    let mut secs = f64::INFINITY;
    for _ in 0..3 {
        let t = Instant::now();
        trak.featurizer().featurize(0, &model, &samples)?;
        secs = secs.min(t.elapsed().as_secs_f64());
        if secs >= 2.0 {
            break;
        }
    }
    let ex_per_s = n as f64 / secs;
    let gflops = 2.0 * p as f64 * k as f64 * ex_per_s / 1e9;

    // The machine's f32 GEMM rate on the projection's shape (B × p) · (p × k), P stored.
    let gemm = gemm_gflops::<f32>(batch, p, k, 3);
    if kind.is_factored() {
        // The model's own layer-factor pass alone (forward + backward), same batches.
        let secs = trak_demo::yardstick::best_of(3, || {
            for b in samples.chunks(batch) {
                std::hint::black_box(trak::FactoredModel::layer_factors(&model, b).ok());
            }
        });
        let fwd_bwd = n as f64 / secs;
        println!(
            "FACTORED threads={threads} ex_per_s={ex_per_s:.0} fwd_bwd_ex_per_s={fwd_bwd:.0} ratio={:.2}",
            ex_per_s / fwd_bwd
        );
    }
    println!(
        "FEATURIZE model=mlp-784-128-10 projector={kind_name} p={p} k={k} B={batch} n={n} threads={threads} ex_per_s={ex_per_s:.1} \
         gflops={gflops:.1} gemm_gflops={gemm:.1} ratio_to_gemm={:.2}",
        gflops / gemm
    );
    Ok(())
}
