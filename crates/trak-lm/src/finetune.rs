//! `trak-lm finetune`: fine-tunes MODEL on a JSONL corpus and writes `DIR/epoch-1` …
//! `DIR/epoch-N` (Hugging Face directories) and `DIR/finetune.json`.

use std::path::{Path, PathBuf};

use trak_candle::candle::Device;
use trak_candle::lm::{self, Corpus, FineTune};
use trak_candle::models::llama::LlamaCheckpoint;
use trak_candle::trak;

use crate::args::Args;
use crate::error::CliError;
use crate::progress::{Eta, clock};
use crate::record::{self, FieldNames, FinetuneRecord};

pub const OPTIONS: &[&str] = &[
    "--model",
    "--data",
    "--out",
    "--epochs",
    "--lr",
    "--batch",
    "--seed",
    "--weight-decay",
    "--freeze",
    "--text-field",
    "--prompt-field",
    "--completion-field",
    "--memory-limit",
];

/// The corpus fields from `--text-field` etc.
pub fn fields(args: &Args) -> lm::Fields {
    let d = lm::Fields::default();
    lm::Fields {
        text: args.value("--text-field").unwrap_or(&d.text).to_string(),
        prompt: args
            .value("--prompt-field")
            .unwrap_or(&d.prompt)
            .to_string(),
        completion: args
            .value("--completion-field")
            .unwrap_or(&d.completion)
            .to_string(),
    }
}

/// Refuses a memory limit below what fine-tuning needs at the least: the weights, their
/// gradients and AdamW's two moments (4 × 4 bytes per parameter).
pub fn check_memory(args: &Args, ckpt: &LlamaCheckpoint) -> Result<(), CliError> {
    let Some(limit) = args.bytes("--memory-limit")? else {
        return Ok(());
    };
    let params: usize = ckpt.vars().iter().map(|(_, v)| v.elem_count()).sum();
    let needed = params * 16;
    if needed > limit {
        return Err(trak::Error::MemoryBudget {
            budget: limit,
            needed,
            reason: "fine-tuning holds the weights, their gradients and AdamW's two moments \
                     (16 bytes per parameter), before any activation"
                .into(),
        }
        .into());
    }
    Ok(())
}

pub fn run(args: &[String]) -> Result<(), CliError> {
    let args = Args::parse(args, OPTIONS, &["--quiet"])?;
    let (model, data, out) = (
        args.path("--model")?,
        args.path("--data")?,
        args.path("--out")?,
    );
    let d = FineTune::default();
    let settings = FineTune {
        epochs: args.parsed("--epochs", d.epochs)?,
        lr: args.parsed("--lr", d.lr)?,
        weight_decay: args.parsed("--weight-decay", d.weight_decay)?,
        batch: args.parsed("--batch", d.batch)?,
        seed: args.parsed("--seed", d.seed)?,
        frozen: match args.values("--freeze") {
            v if v.is_empty() => d.frozen,
            v if v == ["none"] => Vec::new(),
            v => v.iter().map(|s| s.to_string()).collect(),
        },
        ..d
    };
    let fields = fields(&args);
    let (base, tok) = lm::open(&model, &Device::Cpu)?;
    check_memory(&args, &base)?;
    let corpus = Corpus::read(&data, &fields, &tok)?;
    settings.validate(corpus.len(), None)?;
    let rec = FinetuneRecord {
        model: record::absolute(&model)?,
        data: record::absolute(&data)?,
        fields: FieldNames::from(&fields),
        epochs: settings.epochs,
        lr: settings.lr,
        weight_decay: settings.weight_decay,
        batch: settings.batch,
        seed: settings.seed,
        frozen: settings.frozen.clone(),
    };
    std::fs::create_dir_all(&out).map_err(|source| trak::Error::Io {
        path: out.clone(),
        source,
    })?;
    record::write(&out.join("finetune.json"), &rec)?;
    let quiet = args.flag("--quiet");
    let eta = Eta::new("finetune", quiet);
    eta.note(format!(
        "{} documents ({} counted tokens), {} epochs of batches of {}",
        corpus.len(),
        corpus.counted_tokens(),
        settings.epochs,
        settings.batch
    ));
    tune(&settings, &base, &corpus, (&out, &tok), eta)?;
    Ok(())
}

/// Fine-tunes and saves every epoch under `out`.
fn tune(
    settings: &FineTune,
    base: &LlamaCheckpoint,
    corpus: &Corpus,
    (out, tok): (&Path, &lm::LmTokenizer),
    mut eta: Eta,
) -> trak::Result<()> {
    let seqs = corpus.sequences();
    let eta_cell = std::cell::RefCell::new(&mut eta);
    let on_step = |done, total| eta_cell.borrow_mut().report(done, total, "steps");
    settings.run_with_steps(base, &seqs, None, on_step, |e| {
        let dir = epoch_dir(out, e.index);
        e.checkpoint.save_hf_dir(&dir)?;
        tok.save(&dir)?;
        let eta = eta_cell.borrow();
        eta.note(format!(
            "epoch {}: mean token loss {:.4}, saved {} ({})",
            e.index,
            e.mean_loss,
            dir.display(),
            clock(e.elapsed)
        ));
        Ok(())
    })?;
    Ok(())
}

/// `DIR/epoch-<i>`.
pub fn epoch_dir(out: &Path, i: usize) -> PathBuf {
    out.join(format!("epoch-{i}"))
}
