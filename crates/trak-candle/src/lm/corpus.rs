//! JSONL corpora: one JSON object per line, either a document (a text field: every token
//! counts) or a prompt with its completion (only the completion's tokens count).
//!
//! Field names are configurable ([`Fields`]). A line that is not a JSON object, has neither
//! field, has a field that is not a string, or an empty text or completion is
//! [`Error::Parse`] naming the file and the 1-based line; so is a line the tokenizer cannot
//! encode. Records keep their 0-based line ([`Record::line`]), the number that
//! attribution reports name a document by.
//!
//! A document becomes [`TokenSeq::document`] of [`LmTokenizer::sequence`] (the start token,
//! then the text). A prompt and completion are tokenised apart, as trainers of the
//! prompt-completion format do: the prompt as a sequence, the completion without special
//! tokens, so that the completion's tokens are exactly the ones counted. Sequences keep
//! their own lengths; batching pads a batch only to its longest sequence.

use std::path::{Path, PathBuf};

use serde_json::Value;
use trak::Error;

use super::LmTokenizer;
use crate::sequence::TokenSeq;

/// The JSON field names of a corpus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fields {
    /// A document's text (default `text`).
    pub text: String,
    /// A prompt (default `prompt`).
    pub prompt: String,
    /// The completion that follows the prompt (default `completion`).
    pub completion: String,
}

impl Default for Fields {
    fn default() -> Self {
        Self {
            text: "text".into(),
            prompt: "prompt".into(),
            completion: "completion".into(),
        }
    }
}

/// What one line holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// A document: every token counts.
    Text(String),
    /// A prompt and its completion: only the completion counts.
    Completion {
        /// The prompt (may be empty: then only the start token precedes the completion).
        prompt: String,
        /// The completion (not empty).
        completion: String,
    },
}

impl Content {
    /// The whole text (prompt and completion joined).
    pub fn text(&self) -> String {
        match self {
            Self::Text(t) => t.clone(),
            Self::Completion { prompt, completion } => format!("{prompt}{completion}"),
        }
    }
}

/// One line of a corpus, tokenised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The 0-based line in the file.
    pub line: usize,
    /// What the line holds.
    pub content: Content,
    /// Its tokens (start token first) and what counts.
    pub seq: TokenSeq,
}

/// A corpus read from a JSONL file.
#[derive(Debug, Clone)]
pub struct Corpus {
    /// The file.
    pub path: PathBuf,
    /// Its records, in file order.
    pub records: Vec<Record>,
}

impl Corpus {
    /// Reads and tokenises `path` (see the module docs for what a bad line gives). An empty
    /// file is [`Error::Empty`].
    pub fn read(path: &Path, fields: &Fields, tokenizer: &LmTokenizer) -> trak::Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text, fields, tokenizer)
    }

    /// [`Corpus::read`] of text already in memory (`path` is named in errors).
    pub fn parse(
        path: &Path,
        text: &str,
        fields: &Fields,
        tokenizer: &LmTokenizer,
    ) -> trak::Result<Self> {
        let mut records = Vec::new();
        for (line, raw) in text.lines().enumerate() {
            let bad = |reason: String| Error::Parse {
                path: path.to_path_buf(),
                line: line + 1,
                reason,
            };
            let content = parse_line(raw, fields).map_err(bad)?;
            let seq = tokenize(&content, tokenizer).map_err(|e| bad(e.to_string()))?;
            records.push(Record { line, content, seq });
        }
        if records.is_empty() {
            return Err(Error::Empty("corpus (the JSONL file has no lines)"));
        }
        Ok(Self {
            path: path.to_path_buf(),
            records,
        })
    }

    /// The token sequences, in file order.
    pub fn sequences(&self) -> Vec<TokenSeq> {
        self.records.iter().map(|r| r.seq.clone()).collect()
    }

    /// Records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether there are none (never, for a corpus that was read).
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Predicted tokens over all records (the ones that count in f).
    pub fn counted_tokens(&self) -> usize {
        self.records
            .iter()
            .map(|r| r.seq.tokens.len() - r.seq.prompt_len)
            .sum()
    }

    /// The longest record's inputs (its tokens but the last).
    pub fn longest(&self) -> usize {
        self.records
            .iter()
            .map(|r| r.seq.tokens.len() - 1)
            .max()
            .unwrap_or(0)
    }
}

/// One line's content, or why it is not a record.
fn parse_line(raw: &str, fields: &Fields) -> Result<Content, String> {
    if raw.trim().is_empty() {
        return Err("an empty line (one JSON object per line is expected)".into());
    }
    let v: Value = serde_json::from_str(raw).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(map) = v else {
        return Err("not a JSON object".into());
    };
    let string = |name: &str| -> Result<Option<String>, String> {
        match map.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(format!("field {name:?} is not a string: {other}")),
        }
    };
    if let Some(text) = string(&fields.text)? {
        return match text.is_empty() {
            true => Err(format!("field {:?} is empty", fields.text)),
            false => Ok(Content::Text(text)),
        };
    }
    match (string(&fields.prompt)?, string(&fields.completion)?) {
        (Some(_), Some(c)) if c.is_empty() => {
            Err(format!("field {:?} is empty", fields.completion))
        }
        (Some(prompt), Some(completion)) => Ok(Content::Completion { prompt, completion }),
        (Some(_), None) => Err(format!(
            "field {:?} is given but {:?} is missing",
            fields.prompt, fields.completion
        )),
        _ => Err(format!(
            "no field {:?}, and no {:?} with {:?}",
            fields.text, fields.prompt, fields.completion
        )),
    }
}

/// The record's token sequence.
fn tokenize(content: &Content, tok: &LmTokenizer) -> trak::Result<TokenSeq> {
    match content {
        Content::Text(t) => Ok(TokenSeq::document(tok.sequence(t)?)),
        Content::Completion { prompt, completion } => {
            let c = tok.encode_plain(completion)?;
            if c.is_empty() {
                return Err(Error::Empty("completion tokens"));
            }
            Ok(TokenSeq::completion(&tok.sequence(prompt)?, &c))
        }
    }
}
