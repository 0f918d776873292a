//! `trak-lm tokenize --model MODEL TEXT`: one line, the ids Hugging Face's tokenizer gives.

use trak_candle::lm::LmTokenizer;

use crate::args::Args;
use crate::error::CliError;

pub fn run(args: &[String]) -> Result<(), CliError> {
    // `--memory-limit` is accepted as by every command; tokenizing needs no more than the
    // tokenizer itself.
    let args = Args::parse(args, &["--model", "--memory-limit"], &["--quiet"])?;
    args.bytes("--memory-limit")?;
    let tok = LmTokenizer::open(&args.path("--model")?)?;
    let text = args.positionals().join(" ");
    if args.positionals().is_empty() {
        return Err(CliError::Usage("missing TEXT".into()));
    }
    let ids: Vec<String> = tok.encode(&text)?.iter().map(|i| i.to_string()).collect();
    println!("{}", ids.join(" "));
    Ok(())
}
