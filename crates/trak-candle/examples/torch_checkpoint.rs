//! Attributes a checkpoint trained and written by PyTorch, without converting it: the CNN's
//! state dict is read by its PyTorch names from `data/torch_cnn.safetensors` (written by
//! `data/torch_cnn.py` with `safetensors.torch.save_file`), the network is built on it, and
//! `trak-candle` attributes it.
//!
//! It first checks the adapter against PyTorch itself: margins and per-example gradients of
//! four held-out digits, as PyTorch's autograd computed them (`data/torch_cnn_reference.*`).
//! Then it attributes 200 held-out digits to the 4,000 training digits with the factored
//! projector and prints the top proponents of the reference digits. Prints
//!
//! ```text
//! TORCH margins_max_abs_err=<v> grads_rel_err=<v> top10_same_label=<fraction>
//! ```
//!
//! ```text
//! cargo run --release -p trak-candle --example torch_checkpoint
//! ```

#[path = "support/mnist_cnn.rs"]
mod mnist_cnn;
#[path = "support/torch_ref.rs"]
mod torch_ref;

use trak::output::Margin;
use trak::{ProjectorKind, Trak};
use trak_candle::{CandleContext, CandleModel, SampleCollate};

fn main() -> trak::Result<()> {
    let (train, held, held_idx) = torch_ref::torch_split()?;
    let net = torch_ref::torch_cnn()?;
    let acc = net.accuracy(&held).ctx("accuracy")?;
    eprintln!("[torch] PyTorch CNN, held-out accuracy in candle: {acc:.4}");
    let model =
        CandleModel::builder(&net, SampleCollate::new(&[1, 28, 28]), Margin).build(&train[..8])?;
    let c = torch_ref::check(&net, &model)?;
    let trak = Trak::builder()
        .proj_dim(2048)
        .projector(ProjectorKind::FACTORED)
        .build()?;
    let t0 = std::time::Instant::now();
    let mut feats = trak.featurizer();
    feats.featurize(0, &model, &train)?;
    let targets = &held[..200];
    let scores = feats.finalize()?.score(&[(0, &model)], targets)?;
    eprintln!(
        "[torch] featurised and scored in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let top = scores.top_k(10);
    let same = top
        .iter()
        .enumerate()
        .map(|(t, row)| {
            row.iter()
                .filter(|(i, _)| train[*i].target == targets[t].target)
                .count()
        })
        .sum::<usize>();
    for (t, row) in top.iter().enumerate().step_by(50) {
        let best: Vec<String> = row[..3]
            .iter()
            .map(|(i, s)| format!("#{i} ({:?}, {s:.3})", train[*i].target))
            .collect();
        eprintln!(
            "[torch] digit #{} ({:?}): top proponents {}",
            held_idx[t],
            targets[t].target,
            best.join(", ")
        );
    }
    println!(
        "TORCH margins_max_abs_err={:.2e} grads_rel_err={:.2e} top10_same_label={:.3}",
        c.margins_max_abs_err,
        c.grads_rel_err,
        same as f64 / (10 * targets.len()) as f64
    );
    Ok(())
}
