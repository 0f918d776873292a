//! The crate's logits and token ids for some texts, for a local comparison with Hugging Face
//! transformers on the same model (`data/hf_dir_check.py` reads what this writes).
//!
//! `cargo run --release -p trak-candle --example dump_logits -- --model PATH --out FILE TEXT…`
//!
//! MODEL is a GGUF file or a Hugging Face directory. FILE gets, per text, a line of JSON
//! `{"text", "ids", "positions", "vocab", "logits"}`, where `logits` names a raw little-endian
//! f32 file (positions × vocab) beside FILE.

use std::io::Write;
use std::path::PathBuf;

use candle::{Device, Tensor};
use trak_candle::lm;
use trak_candle::{Network, Recorder};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |name: &str| args.windows(2).find(|w| w[0] == name).map(|w| w[1].clone());
    let model = PathBuf::from(value("--model").ok_or("--model PATH is required")?);
    let out = PathBuf::from(value("--out").ok_or("--out FILE is required")?);
    let texts: Vec<&String> = args
        .iter()
        .enumerate()
        .filter(|(i, a)| !a.starts_with("--") && (*i == 0 || !args[i - 1].starts_with("--")))
        .map(|(_, a)| a)
        .collect();
    let (ckpt, tok) = lm::open(&model, &Device::Cpu)?;
    let net = ckpt.model()?;
    let mut index = std::fs::File::create(&out)?;
    for (i, text) in texts.iter().enumerate() {
        let ids = tok.encode(text)?;
        let x = Tensor::new(ids.as_slice(), &Device::Cpu)?.unsqueeze(0)?;
        let logits = net.forward(&x, &mut Recorder::training())?.squeeze(0)?;
        let (t, v) = logits.dims2()?;
        let flat: Vec<f32> = logits.flatten_all()?.to_vec1()?;
        let name = format!(
            "{}.{i}.f32",
            out.file_name().and_then(|n| n.to_str()).unwrap_or("logits")
        );
        let bytes: Vec<u8> = flat.iter().flat_map(|f| f.to_le_bytes()).collect();
        std::fs::write(out.with_file_name(&name), bytes)?;
        let line = serde_json::json!({"text": text, "ids": ids, "positions": t, "vocab": v, "logits": name});
        writeln!(index, "{line}")?;
    }
    Ok(())
}
