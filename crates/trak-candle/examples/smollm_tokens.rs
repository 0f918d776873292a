//! Tokenizer parity on SmolLM2-135M-Instruct's GGUF file: the crate's tokenizer
//! ([`trak_candle::lm::LmTokenizer::from_gguf`]) against the ids Hugging Face transformers
//! gives (`data/smollm2_tokens.json`, written by `data/smollm2_tokens.py`), with candle-core's
//! own GGUF tokenizer beside them.
//!
//! `cargo run --release -p trak-candle --example smollm_tokens -- --gguf PATH`
//!
//! Prints one `TOKENS text=… crate=ok|DIFF candle=ok|DIFF` line per string and
//! `TOKENS_SUMMARY crate=N/M candle=N/M`; exits non-zero if the crate disagrees anywhere.

use std::path::PathBuf;

use candle::quantized::gguf_file::Content;
use candle::quantized::tokenizer::TokenizerFromGguf;
use trak_candle::lm::LmTokenizer;

const TABLE: &str = include_str!("../data/smollm2_tokens.json");

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let path = args
        .windows(2)
        .find(|w| w[0] == "--gguf")
        .map(|w| PathBuf::from(&w[1]))
        .ok_or("usage: smollm_tokens --gguf PATH (scripts/fetch-smollm2.sh prints one)")?;
    let ours = LmTokenizer::from_gguf(&path)?;
    let content = Content::read(&mut std::fs::File::open(&path)?)?;
    let candle_tok = tokenizers::Tokenizer::from_gguf(&content)?;
    let table: serde_json::Value = serde_json::from_str(TABLE)?;
    let rows = table["rows"].as_array().ok_or("no rows in the table")?;
    let (mut ok_ours, mut ok_candle) = (0, 0);
    for row in rows {
        let text = row["text"].as_str().ok_or("a row without text")?;
        let want: Vec<u32> = serde_json::from_value(row["ids"].clone())?;
        let got = ours.encode(text)?;
        let theirs = candle_tok.encode(text, true).map_err(|e| e.to_string())?;
        let theirs = theirs.get_ids().to_vec();
        let mark = |same: bool| if same { "ok" } else { "DIFF" };
        ok_ours += (got == want) as usize;
        ok_candle += (theirs == want) as usize;
        println!(
            "TOKENS text={text:?} crate={} candle={} reference={want:?}{}",
            mark(got == want),
            mark(theirs == want),
            match got == want {
                true => String::new(),
                false => format!(" crate_ids={got:?}"),
            }
        );
    }
    println!(
        "TOKENS_SUMMARY crate={ok_ours}/{} candle={ok_candle}/{}",
        rows.len(),
        rows.len()
    );
    if ok_ours != rows.len() {
        return Err("the crate's tokenizer disagrees with transformers".into());
    }
    Ok(())
}
