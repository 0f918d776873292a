//! `trak-lm tokenize --model MODEL TEXT`: one line, the ids Hugging Face's tokenizer gives.

use trak_candle::lm::LmTokenizer;

use crate::args::Args;
use crate::error::CliError;

pub fn run(args: &[String]) -> Result<(), CliError> {
    let args = Args::parse(args, &["--model"], &[])?;
    let tok = LmTokenizer::open(&args.path("--model")?)?;
    let text = args.positionals().join(" ");
    if args.positionals().is_empty() {
        return Err(CliError::Usage("missing TEXT".into()));
    }
    let ids: Vec<String> = tok.encode(&text)?.iter().map(|i| i.to_string()).collect();
    println!("{}", ids.join(" "));
    Ok(())
}
