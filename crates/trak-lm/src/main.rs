//! `trak-lm`: training-data attribution for your own language model, from the command line.
//!
//! ```text
//! trak-lm tokenize --model MODEL TEXT
//! trak-lm finetune --model MODEL --data train.jsonl --out DIR [--epochs N --lr X --batch B --seed S]
//! trak-lm index RUN --data train.jsonl --checkpoint C1 [--checkpoint C2 …] [--k 2048] [--layers all|mlp|attention] [--shard I/N]
//! trak-lm query RUN --queries queries.jsonl [--top K] [--json] [--tokens] [--html FILE]
//! trak-lm verify RUN --queries queries.jsonl --remove-top K
//! ```
//!
//! MODEL is a GGUF file or a Hugging Face directory. Every command goes through
//! `trak_candle::lm` and the store of `trak`; every failure is one line `error: …` and a
//! non-zero exit status (2 for a usage mistake, 1 otherwise).

mod args;
mod attrib;
mod error;
mod finetune;
mod html;
mod index;
mod progress;
mod query;
mod record;
mod split;
mod tokenize;
mod verify;

use error::CliError;

const USAGE: &str = "trak-lm: training-data attribution for your own language model (TRAK)

usage:
  trak-lm tokenize --model MODEL TEXT
      the ids Hugging Face's tokenizer gives for TEXT (tokenizer(TEXT).input_ids)
  trak-lm finetune --model MODEL --data train.jsonl --out DIR
      [--epochs 5] [--lr 3e-4] [--batch 8] [--seed 0] [--weight-decay 0]
      [--freeze NAME ... | --freeze none] (default: the token embedding)
      writes DIR/epoch-1 … DIR/epoch-N (Hugging Face directories) and DIR/finetune.json
  trak-lm index RUN --data train.jsonl --checkpoint C1 [--checkpoint C2 ...]
      [--k 2048] [--layers all|mlp|attention] [--shard I/N] [--seed 0] [--chunk 2]
      [--block-rows 64]; resumable (run it again after a kill), shardable (--shard or a
      SLURM array); the last shard to finish merges
  trak-lm query RUN --queries queries.jsonl [--top 10] [--json] [--tokens] [--html FILE]
  trak-lm verify RUN --queries queries.jsonl [--remove-top 3] [--seed 0]
      fine-tunes again as recorded without the queries' top documents, and without as many
      random ones; prints REMOVAL lines

MODEL is a GGUF file or a Hugging Face directory (config.json, model.safetensors,
tokenizer.json). A corpus line is {\"text\": …} (every token counts) or {\"prompt\": …,
\"completion\": …} (the completion counts); --text-field, --prompt-field and
--completion-field rename the fields. Every command takes --memory-limit SIZE and --quiet;
for index and query it is the featurisation plan's budget (trak's buffers and the model's
working memory of the batches in flight, the weights on top; default 2G): if a run is
refused for it, lower --chunk or raise it.";

fn dispatch(args: &[String]) -> Result<(), CliError> {
    let Some(cmd) = args.first() else {
        return Err(CliError::Usage("no command given".into()));
    };
    let rest = &args[1..];
    match cmd.as_str() {
        "tokenize" => tokenize::run(rest),
        "finetune" => finetune::run(rest),
        "index" => index::run(rest),
        "query" => query::run(rest),
        "verify" => verify::run(rest),
        "--help" | "-h" | "help" => {
            println!("{USAGE}");
            Ok(())
        }
        other => Err(CliError::Usage(format!("unknown command {other:?}"))),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = dispatch(&args) {
        eprintln!("error: {e}");
        std::process::exit(e.status());
    }
}
