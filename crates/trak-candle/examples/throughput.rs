//! Featurisation throughput through the adapter, against the built-in model on identical
//! weights, measured in the same run.
//!
//! 1. The MNIST MLP (784-128-10, p = 101,770): the built-in `trak::models::Mlp` and the same
//!    weights as a candle network, factored projector, at pipeline batch sizes 64 and 256
//!    (the adapter's chunks: 64 rows). `fwd_bwd` rows time the layer factors alone (the
//!    model's forward + backward, no projection).
//! 2. The CNN of the `cnn` example (p = 9,098) through the adapter, per projector.
//! 3. The tiny transformer of `lm_facts` (its default size, untrained weights) on its corpus:
//!    documents/s and tokens/s (real, unpadded tokens) per projector.
//!
//! ```text
//! cargo run --release -p trak-candle --example throughput -- [n_mlp] [n_cnn] [k]
//! ```
//! (defaults 20,000, 4,000, 2048; digits are reused in turn; threads: `RAYON_NUM_THREADS`).
//! Prints `THROUGHPUT model=… path=… projector=… batch=… ex_per_s=…` lines and
//! `RATIO model=mlp projector=factored batch=… candle_over_builtin=…`.

#[path = "support/fact_metrics.rs"]
mod fact_metrics;
#[path = "support/facts.rs"]
mod facts;
#[path = "support/lm_facts.rs"]
mod lm_facts;
#[path = "support/mlp_net.rs"]
mod mlp_net;
#[path = "support/mnist_cnn.rs"]
mod mnist_cnn;
#[path = "support/tiny_lm.rs"]
mod tiny_lm;

use candle_nn::VarMap;
use trak::data::Sample;
use trak::models::Mlp;
use trak::output::Margin;
use trak::{FactoredModel, Model, ProjectorKind, Trak};
use trak_candle::{CandleContext, CandleModel, SampleCollate};
use trak_demo::cli::Args;
use trak_demo::yardstick::best_of;

/// Examples per second of featurising `data` (best of 3).
fn rate<M: Model<Example = Sample>>(
    m: &M,
    data: &[Sample],
    kind: ProjectorKind,
    k: usize,
    batch: usize,
) -> trak::Result<f64> {
    let trak = Trak::builder()
        .proj_dim(k)
        .projector(kind)
        .batch_size(batch)
        .build()?;
    trak.featurizer().featurize(0, m, &data[..batch])?; // warm-up
    let mut err = Ok(());
    let secs = best_of(3, || {
        let mut f = trak.featurizer();
        if let Err(e) = f.featurize(0, m, data) {
            err = Err(e);
        }
    });
    err.map(|_| data.len() as f64 / secs)
}

/// Examples per second of the layer factors alone, in batches of `batch` (best of 3).
fn factor_rate<E>(m: &dyn FactoredModel<E>, data: &[E], batch: usize) -> f64 {
    let secs = best_of(3, || {
        for b in data.chunks(batch) {
            std::hint::black_box(m.layer_factors(b).expect("factors"));
        }
    });
    data.len() as f64 / secs
}

/// Documents/s and tokens/s of the `lm_facts` transformer, per projector.
fn lm_rates(k: usize, threads: usize) -> trak::Result<()> {
    let cfg = lm_facts::FactsConfig::full();
    let corpus = facts::generate(cfg.facts, cfg.fillers, cfg.seed);
    let docs = corpus.sequences();
    let tokens: usize = docs.iter().map(|d| d.tokens.len() - 1).sum();
    let lm = tiny_lm::LmConfig {
        vocab: facts::VOCAB,
        context: corpus.max_len() - 1,
        d: cfg.d,
        heads: cfg.heads,
        layers: cfg.layers,
    };
    let net = tiny_lm::TinyLm::init(lm, &VarMap::new(), 0).ctx("init")?;
    let collate = trak_candle::TokenCollate {
        context: lm.context,
        pad: facts::PAD,
    };
    let model = CandleModel::builder(
        &net,
        collate,
        trak_candle::SequenceObjective::new(facts::VOCAB),
    )
    .chunk_rows(32)
    .build(&docs[..8])?;
    let p = trak::Model::num_params(&model);
    let fwd = factor_rate(&model, &docs, 256);
    for (name, kind) in [
        ("factored", ProjectorKind::FACTORED),
        ("sparse", ProjectorKind::SPARSE),
        ("dense", ProjectorKind::Rademacher),
    ] {
        let trak = Trak::builder()
            .proj_dim(k)
            .projector(kind)
            .batch_size(256)
            .build()?;
        let secs = best_of(3, || {
            trak.featurizer().featurize(0, &model, &docs).map(|_| ())
        });
        let d = docs.len() as f64 / secs;
        println!(
            "THROUGHPUT model=lm path=candle projector={name} k={k} batch=256 threads={threads} p={p} docs_per_s={d:.0} tokens_per_s={:.0} fwd_bwd_docs_per_s={fwd:.0}",
            d * tokens as f64 / docs.len() as f64
        );
    }
    Ok(())
}

fn main() -> trak::Result<()> {
    let args = Args::from_env();
    let n_mlp = args.positional_or(0, "n_mlp", 20_000usize)?;
    let n_cnn = args.positional_or(1, "n_cnn", 4_000usize)?;
    let k = args.positional_or(2, "k", 2048usize)?;
    let threads = rayon::current_num_threads();
    let digits = trak_demo::mnist_5k()?.samples();
    let data = |n: usize| -> Vec<Sample> { digits.iter().cycle().take(n).cloned().collect() };
    let (mlp_data, cnn_data) = (data(n_mlp), data(n_cnn));

    let builtin = Mlp::new(&[784, 128, 10], Margin, 1)?;
    let net = mlp_net::MlpNet::from_builtin(&builtin);
    let candle =
        CandleModel::builder(net, SampleCollate::new(&[784]), Margin).build(&mlp_data[..8])?;
    let fac = ProjectorKind::FACTORED;
    for batch in [64, 256] {
        let b = rate(&builtin, &mlp_data, fac, k, batch)?;
        let c = rate(&candle, &mlp_data, fac, k, batch)?;
        let bf = factor_rate(&builtin, &mlp_data, batch);
        let cf = factor_rate(&candle, &mlp_data, batch);
        for (path, v, f) in [("builtin", b, bf), ("candle", c, cf)] {
            println!(
                "THROUGHPUT model=mlp path={path} projector=factored k={k} batch={batch} threads={threads} ex_per_s={v:.0} fwd_bwd_ex_per_s={f:.0}"
            );
        }
        println!(
            "RATIO model=mlp projector=factored batch={batch} candle_over_builtin={:.2} fwd_bwd={:.2}",
            c / b,
            cf / bf
        );
    }

    let map = VarMap::new();
    let cnn = mnist_cnn::MnistCnn::init(&map, 0).ctx("init")?;
    let model = CandleModel::builder(&cnn, SampleCollate::new(&[1, 28, 28]), Margin)
        .build(&cnn_data[..8])?;
    let cf = factor_rate(&model, &cnn_data, 256);
    for (name, kind) in [
        ("factored", fac),
        ("sparse", ProjectorKind::SPARSE),
        ("dense", ProjectorKind::Rademacher),
    ] {
        let v = rate(&model, &cnn_data, kind, k, 256)?;
        println!(
            "THROUGHPUT model=cnn path=candle projector={name} k={k} batch=256 threads={threads} ex_per_s={v:.0} fwd_bwd_ex_per_s={cf:.0}"
        );
    }
    lm_rates(k, threads)
}
