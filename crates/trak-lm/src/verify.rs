//! `trak-lm verify RUN --queries FILE --remove-top K`: fine-tunes again as recorded, without
//! the union of the queries' top-K documents, and again without as many random documents,
//! and prints the mean change of the queries' log p(completion) against the recorded run.

use std::path::PathBuf;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use trak_candle::TokenSeq;
use trak_candle::candle::Device;
use trak_candle::lm::{self, Corpus};
use trak_candle::trak::{self, Error};

use crate::args::Args;
use crate::attrib;
use crate::error::CliError;
use crate::finetune::epoch_dir;
use crate::progress::{Eta, clock};
use crate::query::Opened;
use crate::record::{self, FinetuneRecord};

pub const OPTIONS: &[&str] = &["--queries", "--remove-top", "--seed", "--memory-limit"];

/// The fine-tuning record of the run's checkpoints (the directory above the last one).
fn finetune_record(o: &Opened) -> trak::Result<(PathBuf, FinetuneRecord)> {
    let last = o.rec.checkpoints.last().expect("a run has checkpoints");
    let dir = last.parent().map(PathBuf::from).unwrap_or_default();
    let rec: FinetuneRecord = record::read(&dir.join("finetune.json"))?;
    if rec.data != o.rec.data {
        return Err(Error::RunMismatch {
            path: dir.join("finetune.json"),
            what: format!(
                "the fine-tuning data {} is not the indexed corpus {}",
                rec.data.display(),
                o.rec.data.display()
            ),
        });
    }
    Ok((dir, rec))
}

/// The union of every query's top `k` documents, in document order.
fn top_union(scores: &trak::ndarray::Array2<f32>, k: usize) -> Vec<usize> {
    let mut set: Vec<usize> = (0..scores.ncols())
        .flat_map(|q| attrib::top_docs(scores, q, k).into_iter().map(|(d, _)| d))
        .collect();
    set.sort_unstable();
    set.dedup();
    set
}

/// Mean over queries of log p after − log p before.
fn mean_delta(after: &[f32], before: &[f32]) -> f64 {
    let s: f64 = after.iter().zip(before).map(|(a, b)| (a - b) as f64).sum();
    s / before.len() as f64
}

pub fn run(args: &[String]) -> Result<(), CliError> {
    let args = Args::parse(args, OPTIONS, &["--quiet"])?;
    let dir = PathBuf::from(args.positional(0, "RUN (the index directory)")?);
    let quiet = args.flag("--quiet");
    let k: usize = args.parsed("--remove-top", 3)?;
    let o = Opened::open(&dir, args.bytes("--memory-limit")?)?;
    let queries = o.queries(&args.path("--queries")?)?.sequences();
    let (ft_dir, ft) = finetune_record(&o)?;
    let (_, scores) = o.score(&queries, quiet)?;
    let top = top_union(&scores, k);
    let mut rng = ChaCha8Rng::seed_from_u64(args.parsed("--seed", 0u64)? ^ 0x7e57);
    let mut all: Vec<usize> = (0..o.corpus.len()).collect();
    all.shuffle(&mut rng);
    let mut random = all[..top.len()].to_vec();
    random.sort_unstable();
    let recorded = attrib::load(&epoch_dir(&ft_dir, ft.epochs))?;
    let before = lm::log_probs(&recorded.model()?, &queries, 8)?;
    let (base, tok) = lm::open(&ft.model, &Device::Cpu)?;
    crate::finetune::check_memory(&args, &base)?;
    let corpus = Corpus::read(&ft.data, &ft.fields.fields(), &tok)?;
    let docs = corpus.sequences();
    for (kind, removed) in [("top", &top), ("random", &random)] {
        let after = retrain(&ft, &base, &docs, removed, (&queries, quiet))?;
        println!(
            "REMOVAL kind={kind} docs={} mean_delta_logp={:.4}",
            removed.len(),
            mean_delta(&after, &before)
        );
    }
    Ok(())
}

/// Fine-tunes as recorded with `removed` weighted 0; the queries' log p afterwards.
fn retrain(
    ft: &FinetuneRecord,
    base: &trak_candle::models::llama::LlamaCheckpoint,
    docs: &[TokenSeq],
    removed: &[usize],
    (queries, quiet): (&[TokenSeq], bool),
) -> trak::Result<Vec<f32>> {
    let mut weights = vec![1f32; docs.len()];
    removed.iter().for_each(|&d| weights[d] = 0.0);
    let mut eta = Eta::new(
        format!("verify: fine-tuning without {} documents", removed.len()),
        quiet,
    );
    let settings = ft.settings();
    let eta = std::cell::RefCell::new(&mut eta);
    let on_step = |done, total| eta.borrow_mut().report(done, total, "steps");
    let tuned = settings.run_with_steps(base, docs, Some(&weights), on_step, |e| {
        let msg = format!(
            "epoch {}: mean token loss {:.4} ({})",
            e.index,
            e.mean_loss,
            clock(e.elapsed)
        );
        eta.borrow().note(msg);
        Ok(())
    })?;
    lm::log_probs(&tuned.model()?, queries, 8)
}
