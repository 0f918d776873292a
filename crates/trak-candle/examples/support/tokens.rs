//! The tokenizer of `smollm_facts`: the model's own ([`trak_candle::lm::LmTokenizer`], from
//! the GGUF metadata), or, for the tiny random model of `--quick`, a word vocabulary built
//! from the corpus (GPT-2 style pieces: a word with its leading space; full stops and commas
//! on their own).

// Shared by the example and its test; not each uses every item.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::collections::HashMap;

/// A tokenizer.
pub enum Tokens {
    /// The model's tokenizer.
    Gguf(Box<trak_candle::lm::LmTokenizer>),
    /// Word pieces of the corpus; id 0 is the start token.
    Words {
        /// Piece of each id.
        pieces: Vec<String>,
        /// Id of each piece.
        ids: HashMap<String, u32>,
    },
}

/// Word pieces of `text`: a word keeps the space before it; `.` and `,` stand alone.
fn pieces(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut cur = String::new();
    for c in text.chars() {
        if c == ' ' || c == '.' || c == ',' {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            if c != ' ' {
                out.push(c.to_string());
                continue;
            }
        }
        cur.push(c);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

impl Tokens {
    /// The word vocabulary of `docs` and `queries`.
    pub fn words(docs: &[String], queries: &[String]) -> Self {
        let set: BTreeSet<String> = docs.iter().chain(queries).flat_map(|t| pieces(t)).collect();
        let pieces: Vec<String> = std::iter::once("<s>".to_string()).chain(set).collect();
        let ids = pieces
            .iter()
            .enumerate()
            .map(|(i, p)| (p.clone(), i as u32))
            .collect();
        Self::Words { pieces, ids }
    }

    /// Tokens in the vocabulary.
    pub fn vocab(&self) -> usize {
        match self {
            Self::Gguf(t) => t.vocab_size(),
            Self::Words { pieces, .. } => pieces.len(),
        }
    }

    /// The start token (SmolLM2's `<|endoftext|>`, [`trak_candle::lm::LmTokenizer::start_token`];
    /// or the word vocabulary's `<s>`).
    pub fn bos(&self) -> u32 {
        match self {
            Self::Gguf(t) => t.start_token(),
            Self::Words { .. } => 0,
        }
    }

    /// The ids of `text` (no start token).
    ///
    /// # Panics
    /// If the text is outside the vocabulary (the corpus is generated with it) or the model's
    /// tokenizer fails.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        match self {
            Self::Gguf(t) => t.encode_plain(text).expect("tokenizing"),
            Self::Words { ids, .. } => pieces(text).iter().map(|p| ids[p]).collect(),
        }
    }

    /// The ids of `text` after the start token: how every example's sequence begins.
    pub fn with_bos(&self, text: &str) -> Vec<u32> {
        std::iter::once(self.bos())
            .chain(self.encode(text))
            .collect()
    }

    /// The text of one token.
    pub fn piece(&self, id: u32) -> String {
        match self {
            Self::Gguf(t) => t.decode(&[id]),
            Self::Words { pieces, .. } => pieces[id as usize].clone(),
        }
    }
}
