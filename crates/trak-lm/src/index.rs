//! `trak-lm index RUN`: featurises a corpus at every checkpoint into the store (resumable,
//! shardable), and merges once every block of every checkpoint is there.

use trak_candle::lm::{Corpus, LayerSet};
use trak_candle::trak::progress::Progress;
use trak_candle::trak::store::{FeaturizeOptions, MergeOptions, Run, Shard};
use trak_candle::trak::{self, Error};

use crate::args::Args;
use crate::attrib;
use crate::error::CliError;
use crate::finetune::fields;
use crate::progress::Eta;
use crate::record::{self, FieldNames, IndexRecord};

pub const OPTIONS: &[&str] = &[
    "--data",
    "--checkpoint",
    "--k",
    "--layers",
    "--shard",
    "--seed",
    "--chunk",
    "--block-rows",
    "--memory-limit",
    "--text-field",
    "--prompt-field",
    "--completion-field",
];

/// The shard from `--shard I/N` (1-based I), a SLURM array's environment, or the whole run.
fn shard(args: &Args) -> Result<Shard, CliError> {
    if let Some(s) = args.value("--shard") {
        let bad = || CliError::Usage(format!("--shard {s:?} is not I/N with 1 ≤ I ≤ N"));
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (i, n): (usize, usize) = (i.parse().map_err(|_| bad())?, n.parse().map_err(|_| bad())?);
        if i == 0 || i > n {
            return Err(bad());
        }
        return Ok(Shard::new(i - 1, n)?);
    }
    match std::env::var_os("SLURM_ARRAY_TASK_ID") {
        Some(_) => Ok(Shard::from_env()?),
        None => Ok(Shard::new(0, 1)?),
    }
}

/// The record this command line describes.
fn describe(args: &Args) -> Result<IndexRecord, CliError> {
    let checkpoints = args.values("--checkpoint");
    if checkpoints.is_empty() {
        return Err(CliError::Usage("missing --checkpoint (one or more)".into()));
    }
    let layers: LayerSet = args.value("--layers").unwrap_or("all").parse()?;
    Ok(IndexRecord {
        data: record::absolute(&args.path("--data")?)?,
        fields: FieldNames::from(&fields(args)),
        checkpoints: checkpoints
            .iter()
            .map(|c| record::absolute(std::path::Path::new(c)))
            .collect::<trak::Result<_>>()?,
        layers: layers.as_str().into(),
        k: args.parsed("--k", 2048)?,
        seed: args.parsed("--seed", 0)?,
        chunk: args.parsed("--chunk", 2)?,
        block_rows: args.parsed("--block-rows", 64)?,
    })
}

/// Writes the record, or checks it against the one the run has.
fn settle(run_dir: &std::path::Path, rec: &IndexRecord) -> trak::Result<()> {
    let path = run_dir.join("trak-lm.json");
    if path.is_file() {
        let stored: IndexRecord = record::read(&path)?;
        if &stored != rec {
            return Err(Error::RunMismatch {
                path,
                what: "the corpus, checkpoints or settings differ from the ones this run was \
                       indexed with (use another RUN directory)"
                    .into(),
            });
        }
        return Ok(());
    }
    std::fs::create_dir_all(run_dir).map_err(|source| Error::Io {
        path: run_dir.into(),
        source,
    })?;
    record::write(&path, rec)
}

pub fn run(args: &[String]) -> Result<(), CliError> {
    let args = Args::parse(args, OPTIONS, &["--quiet"])?;
    let run_dir = std::path::PathBuf::from(args.positional(0, "RUN (the index directory)")?);
    let rec = describe(&args)?;
    let shard = shard(&args)?;
    let quiet = args.flag("--quiet");
    let tok = attrib::tokenizer(&rec)?;
    let corpus = Corpus::read(&rec.data, &rec.fields.fields(), &tok)?;
    let seqs = corpus.sequences();
    let trak = attrib::trak_config(&rec, args.bytes("--memory-limit")?)?;
    settle(&run_dir, &rec)?;
    let run = Run::create(&run_dir, &trak, seqs.len(), rec.block_rows)?;
    for (m, path) in rec.checkpoints.iter().enumerate() {
        let what = format!("index checkpoint {}/{}", m + 1, rec.checkpoints.len());
        let mut eta = Eta::new(what, quiet);
        let ckpt = attrib::load(path)?;
        let net = ckpt.model()?;
        let model = attrib::adapter(&rec, &net, &seqs)?;
        let mut report = |p: Progress| eta.report(p.done, p.total, "blocks");
        let opts = FeaturizeOptions::default()
            .shard(shard)
            .progress(&mut report);
        let done = run.featurize(m as u64, &model, &seqs, opts)?;
        if !quiet {
            eprintln!(
                "[trak-lm] checkpoint {}: {} blocks computed, {} already there",
                m + 1,
                done.computed,
                done.skipped
            );
        }
    }
    let missing: usize = (0..rec.checkpoints.len() as u64)
        .map(|m| run.missing_blocks(m).map(|b| b.len()))
        .sum::<trak::Result<usize>>()?;
    match missing {
        0 => {
            run.merge(MergeOptions::default())?;
            println!(
                "indexed {} documents at {} checkpoints into {}",
                seqs.len(),
                rec.checkpoints.len(),
                run_dir.display()
            );
        }
        n => println!(
            "shard {}/{} done; {n} blocks of other shards are still missing (the last shard to finish merges)",
            shard.index() + 1,
            shard.count()
        ),
    }
    Ok(())
}
