//! Parity of the candle adapter with the built-in MLP: the same MNIST MLP weights (784-128-10,
//! trained by trak-demo's MLP recipe) attributed as a `trak::models::Mlp` and as a candle
//! network. Prints
//!
//! ```text
//! PARITY features_rel_err=<max relative error> lds_builtin=<v> lds_candle=<v>
//! ```
//!
//! `features_rel_err` is the largest max |Δφ| / max |φ| over the training and target features
//! of every checkpoint, dense and factored projectors; the LDS uses trak-demo's protocol
//! (4,000 train, 200 targets, J = 300 subset models, margins cached in `target/lds-cache/`)
//! with M = 5 checkpoints at k = 2048. `--quick`: the protocol's quick settings, M = 1,
//! k = 512.
//!
//! ```text
//! cargo run --release -p trak-candle --example mlp_parity [-- --quick]
//! ```

#[path = "support/mlp_net.rs"]
mod mlp_net;
#[path = "support/parity.rs"]
mod parity;

use trak_demo::cli::Args;
use trak_demo::protocol::BenchConfig;

fn main() -> trak::Result<()> {
    let args = Args::from_env();
    let quick = args.flag("--quick");
    let mut cfg = if quick {
        BenchConfig::quick()
    } else {
        BenchConfig::full()
    };
    if args.flag("--no-cache") {
        cfg.cache_dir = None;
    }
    let (m, k) = if quick { (1, 512) } else { (5, 2048) };
    let p = parity::run(&cfg, m, k)?;
    println!(
        "PARITY features_rel_err={:.2e} lds_builtin={:.4} lds_candle={:.4}",
        p.features_rel_err, p.lds_builtin, p.lds_candle
    );
    Ok(())
}
