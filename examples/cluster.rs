//! A researcher's attribution binary for a cluster: subcommands on a work directory on shared
//! storage, as a SLURM job array and a dependent job call them (scripts/slurm/, the recipe in
//! docs/SCALING.md). The problem: MLPs on 20,000 shifted MNIST digits
//! ([`trak_demo::cluster`]).
//!
//! ```text
//! cargo build --release --example cluster
//! target/release/examples/cluster prepare  WORK [--train N] [--checkpoints M]   once, first
//! target/release/examples/cluster featurize WORK [--shard i/n]   one array task (the SLURM
//!                                                                task's shard by default)
//! target/release/examples/cluster merge WORK [--shards N]        after the array
//! target/release/examples/cluster score WORK
//! ```
//!
//! Each step prints one grep-able line (`PREPARE`, `FEATURIZE`, `MERGE`, `SCORE`); an error
//! is printed as `error: …` with exit status 1 (an incomplete run names the missing shards).

use std::process::ExitCode;

fn main() -> ExitCode {
    match trak_demo::cluster::main(&trak_demo::cli::Args::from_env()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
