//! Tokenizers that give Hugging Face's ids: a directory's `tokenizer.json` as it is, or a
//! byte-level BPE tokenizer rebuilt from a GGUF file's `tokenizer.ggml.*` metadata with the
//! pre-tokenizer its `tokenizer.ggml.pre` names.
//!
//! **Pre-tokenizer types** ([`PRE_TOKENIZERS`]): `gpt2` (GPT-2's regex inside byte-level),
//! `smollm` and `starcoder` (every digit on its own, then GPT-2's regex: SmolLM2's
//! `tokenizer.json`), `llama-bpe` / `llama3` (Llama 3's regex, digits in threes), `qwen2`
//! (Qwen2's regex, every digit on its own, NFC normalisation). Any other type, and
//! a tokenizer model other than byte-level BPE (`tokenizer.ggml.model = "gpt2"`), is refused
//! by name ([`CheckpointProblem::ConfigField`]): a silent fallback would give other ids for
//! the same text, as candle-core's GGUF tokenizer does for SmolLM2 (it starts
//! "The capital of France is" with `ĠThe`, 378, where Hugging Face has `The`, 504).
//! `tokenizer.ggml.add_space_prefix` sets the byte-level prefix space,
//! `tokenizer.ggml.add_bos_token` whether [`LmTokenizer::encode`] starts with the BOS token;
//! tokens typed control (3) are special tokens and user-defined ones (4) added tokens, so
//! that both are matched whole, as llama.cpp and transformers match them.
//!
//! **The start token.** A causal LM predicts token t + 1 from tokens ≤ t, so the first token
//! of a text is never predicted. A training sequence or a prompt therefore starts with a
//! token that is not part of the text ([`LmTokenizer::start_token`]): the BOS token when the
//! tokenizer adds one, otherwise the end-of-text token that separates documents in
//! pretraining (`<|endoftext|>`, SmolLM2's id 0), otherwise BOS, otherwise EOS.

use std::path::Path;

use candle::quantized::gguf_file::{Content, Value};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::normalizers::unicode::NFC;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};
use trak::{CheckpointProblem, Error};

/// The `tokenizer.ggml.pre` types [`LmTokenizer::from_gguf`] rebuilds.
pub const PRE_TOKENIZERS: [&str; 6] = [
    "gpt2",
    "smollm",
    "starcoder",
    "llama-bpe",
    "llama3",
    "qwen2",
];

/// Llama 3's split (Hugging Face's `tokenizer.json`; digits in runs of up to three).
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's split (every digit on its own).
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// A tokenizer with its special ids and the start token of sequences.
#[derive(Clone)]
pub struct LmTokenizer {
    inner: Tokenizer,
    bos: Option<u32>,
    eos: Option<u32>,
    adds_bos: bool,
    start: u32,
}

impl std::fmt::Debug for LmTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LmTokenizer")
            .field("vocab", &self.vocab_size())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("adds_bos", &self.adds_bos)
            .field("start", &self.start)
            .finish()
    }
}

fn config_error(path: &Path, field: &str, reason: String) -> Error {
    Error::Checkpoint {
        path: path.to_path_buf(),
        problem: CheckpointProblem::ConfigField {
            field: field.into(),
            reason,
        },
    }
}

fn tokenizer_error(path: &Path, what: &str, e: impl std::fmt::Display) -> Error {
    config_error(path, what, e.to_string())
}

impl LmTokenizer {
    /// A directory's (or a file's) `tokenizer.json`, used as it is; BOS and EOS are read
    /// from `tokenizer_config.json` beside it when there is one.
    pub fn from_json(path: &Path) -> trak::Result<Self> {
        let file = match path.is_dir() {
            true => path.join("tokenizer.json"),
            false => path.to_path_buf(),
        };
        if !file.is_file() {
            let source = std::io::Error::new(std::io::ErrorKind::NotFound, "no tokenizer.json");
            return Err(Error::Io { path: file, source });
        }
        let inner =
            Tokenizer::from_file(&file).map_err(|e| tokenizer_error(&file, "tokenizer.json", e))?;
        let config = file.with_file_name("tokenizer_config.json");
        let (bos, eos) = special_names(&config)?;
        let id = |name: Option<String>| name.and_then(|n| inner.token_to_id(&n));
        let (bos, eos) = (id(bos), id(eos));
        Self::new(inner, (bos, eos), &file)
    }

    /// The tokenizer a GGUF file's metadata describes (see the module docs); an unknown
    /// pre-tokenizer type or tokenizer model is [`Error::Checkpoint`] naming it.
    pub fn from_gguf(path: &Path) -> trak::Result<Self> {
        let (_, content) = crate::models::llama::gguf::read(path)?;
        Self::from_gguf_content(path, &content)
    }

    /// [`LmTokenizer::from_gguf`] of parsed metadata (`path` is named in errors).
    pub fn from_gguf_content(path: &Path, c: &Content) -> trak::Result<Self> {
        let meta = Meta { path, c };
        let model = meta.string("tokenizer.ggml.model")?;
        if model != "gpt2" {
            let reason = format!(
                "{model:?}: only byte-level BPE (\"gpt2\") tokenizers are rebuilt; \
                 use the model's tokenizer.json"
            );
            return Err(config_error(path, "tokenizer.ggml.model", reason));
        }
        let tokens = meta.strings("tokenizer.ggml.tokens")?;
        let merges = meta
            .strings("tokenizer.ggml.merges")?
            .into_iter()
            .map(|m| match m.split_once(' ') {
                Some((a, b)) => Ok((a.to_string(), b.to_string())),
                None => Err(config_error(
                    path,
                    "tokenizer.ggml.merges",
                    format!("{m:?} is not two tokens separated by a space"),
                )),
            })
            .collect::<trak::Result<Vec<_>>>()?;
        let vocab: Vocab = (0u32..).zip(&tokens).map(|(i, t)| (t.clone(), i)).collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| tokenizer_error(path, "tokenizer.ggml.merges", e))?;
        let mut inner = Tokenizer::new(bpe);
        let pre = match meta.get("tokenizer.ggml.pre") {
            Some(_) => meta.string("tokenizer.ggml.pre")?,
            None => "gpt2".to_string(),
        };
        let prefix = meta.flag("tokenizer.ggml.add_space_prefix")?;
        inner.with_pre_tokenizer(Some(pre_tokenizer(path, &pre, prefix)?));
        if pre == "qwen2" {
            inner
                .with_normalizer(Some(NFC))
                .map_err(|e| tokenizer_error(path, "tokenizer.ggml.pre", e))?;
        }
        inner.with_decoder(Some(ByteLevelDecoder::new(prefix, true, true)));
        add_special(
            path,
            &mut inner,
            &tokens,
            meta.get("tokenizer.ggml.token_type"),
        )?;
        let bos = meta.id("tokenizer.ggml.bos_token_id", tokens.len())?;
        let eos = meta.id("tokenizer.ggml.eos_token_id", tokens.len())?;
        if meta.flag("tokenizer.ggml.add_bos_token")? {
            let Some(b) = bos else {
                let reason = "true, but tokenizer.ggml.bos_token_id is not given".into();
                return Err(config_error(path, "tokenizer.ggml.add_bos_token", reason));
            };
            let name = tokens[b as usize].clone();
            let template = TemplateProcessing::builder()
                .try_single(format!("{name} $A"))
                .and_then(|t| t.try_pair(format!("{name} $A {name}:1 $B:1")))
                .map_err(|e| tokenizer_error(path, "tokenizer.ggml.add_bos_token", e))?
                .special_tokens(vec![(name, b)])
                .build()
                .map_err(|e| tokenizer_error(path, "tokenizer.ggml.add_bos_token", e))?;
            inner.with_post_processor(Some(template));
        }
        Self::new(inner, (bos, eos), path)
    }

    /// Reads a model's tokenizer: `tokenizer.json` in a directory, or the metadata of a GGUF
    /// file.
    pub fn open(model: &Path) -> trak::Result<Self> {
        match model.is_dir() {
            true => Self::from_json(model),
            false => Self::from_gguf(model),
        }
    }

    fn new(
        inner: Tokenizer,
        (bos, eos): (Option<u32>, Option<u32>),
        path: &Path,
    ) -> trak::Result<Self> {
        let with = inner.encode("a", true);
        let without = inner.encode("a", false);
        let (with, without) = match (with, without) {
            (Ok(w), Ok(wo)) => (w.get_ids().to_vec(), wo.get_ids().to_vec()),
            (Err(e), _) | (_, Err(e)) => return Err(tokenizer_error(path, "tokenizer", e)),
        };
        let adds_bos = with.len() > without.len() && bos.is_some() && with.first() == bos.as_ref();
        let start = match adds_bos {
            true => bos,
            false => inner.token_to_id("<|endoftext|>").or(bos).or(eos),
        };
        let Some(start) = start else {
            let reason = "no BOS, EOS or <|endoftext|> token to start sequences with".into();
            return Err(config_error(path, "tokenizer", reason));
        };
        Ok(Self {
            inner,
            bos,
            eos,
            adds_bos,
            start,
        })
    }

    /// Hugging Face's `tokenizer(text).input_ids`: the text's ids, with the BOS token first
    /// when the tokenizer adds one.
    pub fn encode(&self, text: &str) -> trak::Result<Vec<u32>> {
        self.encode_with(text, true)
    }

    /// The text's ids without any special token added (a completion that follows a prompt).
    pub fn encode_plain(&self, text: &str) -> trak::Result<Vec<u32>> {
        self.encode_with(text, false)
    }

    fn encode_with(&self, text: &str, special: bool) -> trak::Result<Vec<u32>> {
        self.inner
            .encode(text, special)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| Error::InvalidParameter {
                parameter: "text to tokenize",
                value: format!("{:?}", text.chars().take(40).collect::<String>()),
                expected: format!("text the tokenizer can encode ({e})"),
            })
    }

    /// The ids of a sequence that begins with `text`: [`LmTokenizer::start_token`] first (once,
    /// also when the tokenizer adds it itself), then the text's ids.
    pub fn sequence(&self, text: &str) -> trak::Result<Vec<u32>> {
        let ids = self.encode_plain(text)?;
        Ok(std::iter::once(self.start).chain(ids).collect())
    }

    /// The token sequences and prompts start with (see the module docs).
    pub fn start_token(&self) -> u32 {
        self.start
    }

    /// The BOS id, if the tokenizer has one.
    pub fn bos(&self) -> Option<u32> {
        self.bos
    }

    /// The EOS id, if the tokenizer has one.
    pub fn eos(&self) -> Option<u32> {
        self.eos
    }

    /// Whether [`LmTokenizer::encode`] starts with BOS.
    pub fn adds_bos(&self) -> bool {
        self.adds_bos
    }

    /// Tokens in the vocabulary, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The text of `ids` (special tokens kept).
    pub fn decode(&self, ids: &[u32]) -> String {
        self.inner.decode(ids, false).unwrap_or_default()
    }

    /// The Hugging Face tokenizer itself.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.inner
    }

    /// Writes `tokenizer.json` and a `tokenizer_config.json` naming BOS and EOS (class
    /// `PreTrainedTokenizerFast`, so that transformers uses the file's own pipeline) into
    /// `dir`.
    pub fn save(&self, dir: &Path) -> trak::Result<()> {
        let file = dir.join("tokenizer.json");
        let text = self
            .inner
            .to_string(false)
            .map_err(|e| tokenizer_error(&file, "tokenizer", e))?;
        let name = |id: Option<u32>| id.and_then(|i| self.inner.id_to_token(i));
        let config = serde_json::json!({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": name(self.bos),
            "eos_token": name(self.eos),
            "add_bos_token": self.adds_bos,
            "clean_up_tokenization_spaces": false,
        });
        write(&file, text.as_bytes())?;
        write(
            &dir.join("tokenizer_config.json"),
            config.to_string().as_bytes(),
        )
    }
}

fn write(path: &Path, bytes: &[u8]) -> trak::Result<()> {
    std::fs::write(path, bytes).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The byte-level pre-tokenizer of a `tokenizer.ggml.pre` type.
fn pre_tokenizer(path: &Path, pre: &str, prefix: bool) -> trak::Result<PreTokenizerWrapper> {
    let split = |re: &str| -> trak::Result<PreTokenizerWrapper> {
        let s = Split::new(
            SplitPattern::Regex(re.into()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| tokenizer_error(path, "tokenizer.ggml.pre", e))?;
        let seq = vec![s.into(), ByteLevel::new(prefix, true, false).into()];
        Ok(Sequence::new(seq).into())
    };
    Ok(match pre {
        "gpt2" => ByteLevel::new(prefix, true, true).into(),
        "smollm" | "starcoder" => {
            let seq = vec![
                Digits::new(true).into(),
                ByteLevel::new(prefix, true, true).into(),
            ];
            Sequence::new(seq).into()
        }
        "llama-bpe" | "llama3" => split(LLAMA3_SPLIT)?,
        "qwen2" => split(QWEN2_SPLIT)?,
        other => {
            let reason = format!(
                "{other:?} is not a pre-tokenizer type this crate rebuilds (known: {}); \
                 use the model's tokenizer.json",
                PRE_TOKENIZERS.join(", ")
            );
            return Err(config_error(path, "tokenizer.ggml.pre", reason));
        }
    })
}

/// Control tokens (type 3) as special tokens, user-defined ones (type 4) as added tokens.
fn add_special(
    path: &Path,
    inner: &mut Tokenizer,
    tokens: &[String],
    types: Option<&Value>,
) -> trak::Result<()> {
    let Some(types) = types else { return Ok(()) };
    let bad = || {
        config_error(
            path,
            "tokenizer.ggml.token_type",
            "not an array of integers".into(),
        )
    };
    let types = types.to_vec().map_err(|_| bad())?;
    let (mut special, mut added) = (Vec::new(), Vec::new());
    for (token, ty) in tokens.iter().zip(types) {
        match ty.to_i32().map_err(|_| bad())? {
            3 => special.push(AddedToken::from(token.clone(), true).normalized(false)),
            4 => added.push(AddedToken::from(token.clone(), false).normalized(false)),
            _ => {}
        }
    }
    let err = |e| tokenizer_error(path, "tokenizer.ggml.token_type", e);
    inner.add_special_tokens(special).map_err(err)?;
    inner.add_tokens(added).map_err(err)?;
    Ok(())
}

/// BOS and EOS names from a `tokenizer_config.json` (strings, or `{"content": …}`).
fn special_names(config: &Path) -> trak::Result<(Option<String>, Option<String>)> {
    if !config.is_file() {
        return Ok((None, None));
    }
    let text = std::fs::read_to_string(config).map_err(|source| Error::Io {
        path: config.to_path_buf(),
        source,
    })?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| tokenizer_error(config, "tokenizer_config.json", e))?;
    let name = |key: &str| match v.get(key) {
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(o) => o
            .get("content")
            .and_then(|c| c.as_str())
            .map(str::to_string),
        None => None,
    };
    Ok((name("bos_token"), name("eos_token")))
}

/// Typed access to GGUF metadata, errors naming the key.
struct Meta<'a> {
    path: &'a Path,
    c: &'a Content,
}

impl Meta<'_> {
    fn get(&self, key: &str) -> Option<&Value> {
        self.c.metadata.get(key)
    }

    fn need(&self, key: &str) -> trak::Result<&Value> {
        self.get(key)
            .ok_or_else(|| config_error(self.path, key, "missing".into()))
    }

    fn string(&self, key: &str) -> trak::Result<String> {
        let v = self.need(key)?;
        v.to_string()
            .cloned()
            .map_err(|_| config_error(self.path, key, "not a string".into()))
    }

    fn strings(&self, key: &str) -> trak::Result<Vec<String>> {
        let bad = || config_error(self.path, key, "not an array of strings".into());
        let items = self.need(key)?.to_vec().map_err(|_| bad())?;
        items
            .iter()
            .map(|v| v.to_string().cloned().map_err(|_| bad()))
            .collect()
    }

    fn flag(&self, key: &str) -> trak::Result<bool> {
        match self.get(key) {
            None => Ok(false),
            Some(v) => v
                .to_bool()
                .map_err(|_| config_error(self.path, key, "not true or false".into())),
        }
    }

    /// A token id, checked against the vocabulary.
    fn id(&self, key: &str, vocab: usize) -> trak::Result<Option<u32>> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let id = v.to_u32().or_else(|_| v.to_i32().map(|i| i as u32));
        match id {
            Ok(i) if (i as usize) < vocab => Ok(Some(i)),
            Ok(i) => Err(config_error(
                self.path,
                key,
                format!("{i} is outside the vocabulary of {vocab} tokens"),
            )),
            Err(_) => Err(config_error(self.path, key, "not an integer".into())),
        }
    }
}
