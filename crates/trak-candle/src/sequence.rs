//! Token sequences for causal language models: the example type, its collation, and
//! [`trak::output::SequenceLogProb`] as an objective on them ([`SequenceObjective`]).
//!
//! A [`TokenSeq`] of n tokens is read as y_0 … y_{n−2} (position t predicts y_{t+1}); the
//! positions predicting the tokens from `prompt_len` on count in f. A training document has
//! `prompt_len = 1` (every token after the first, usually a start token, counts): f is the
//! document's log-probability, Q = 1. A query is a prompt followed by its completion, with
//! `prompt_len` = the prompt's length: f is log p(completion | prompt).
//!
//! **Padding.** [`TokenCollate`] right-pads every sequence to one fixed context length, so
//! every batch has the same shape (which the adapter's bit-identity needs; see
//! [`crate::pass`]). With causal attention a real position never attends to a later one, so
//! padding cannot change a real position's outputs; padded positions do not count in f, so
//! their output gradients δ are zero, and Σ_t δ_t a_tᵀ gets nothing from them. A network
//! that lets positions see later ones (no causal mask) would break this, and the padding
//! invariance test (`tests/sequences.rs`) would show it.

use candle::{DType, Device, Tensor};
use trak::output::{OutputValue, SequenceLogProb};

use crate::collate::Collate;
use crate::objective::Objective;

/// A token sequence: a document, or a prompt followed by its completion.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenSeq {
    /// The tokens, start token first.
    pub tokens: Vec<u32>,
    /// Tokens before this index are context only; the ones from it on count in f (≥ 1).
    pub prompt_len: usize,
}

impl TokenSeq {
    /// A training document: every token after the first counts.
    pub fn document(tokens: Vec<u32>) -> Self {
        Self {
            tokens,
            prompt_len: 1,
        }
    }

    /// A prompt and its completion: only the completion's tokens count.
    pub fn completion(prompt: &[u32], completion: &[u32]) -> Self {
        Self {
            tokens: prompt.iter().chain(completion).copied().collect(),
            prompt_len: prompt.len(),
        }
    }
}

/// Collates [`TokenSeq`]s into a `B × context` u32 tensor of input tokens (y_0 … y_{n−2}),
/// right-padded with `pad`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenCollate {
    /// Positions per sequence (the network's context length).
    pub context: usize,
    /// The padding token.
    pub pad: u32,
}

impl Collate<TokenSeq> for TokenCollate {
    fn inputs(&self, batch: &[TokenSeq], device: &Device) -> candle::Result<Tensor> {
        let mut ids = vec![self.pad; batch.len() * self.context];
        for (b, s) in batch.iter().enumerate() {
            self.check(s).map_err(candle::Error::msg)?;
            let inputs = s.tokens.len().saturating_sub(1);
            ids[b * self.context..b * self.context + inputs].copy_from_slice(&s.tokens[..inputs]);
        }
        Tensor::from_vec(ids, (batch.len(), self.context), device)?.to_dtype(DType::U32)
    }

    /// The sequence's inputs (all tokens but the last) must fit the context.
    fn check(&self, s: &TokenSeq) -> Result<(), String> {
        match s.tokens.len().saturating_sub(1) > self.context {
            true => Err(format!(
                "the sequence has {} tokens, more than the context of {} + 1",
                s.tokens.len(),
                self.context
            )),
            false => Ok(()),
        }
    }

    /// Two pad tokens.
    fn padding(&self) -> Option<TokenSeq> {
        Some(TokenSeq::document(vec![self.pad; 2]))
    }
}

impl TokenSeq {
    /// The next token at each of `positions` output places (place t predicts token t + 1;
    /// 0 past the end) and whether it counts in f: the targets of the sequence objective,
    /// and of a training loss over the same positions. An `Err` says why the sequence has
    /// nothing to predict or does not fit.
    pub fn next_tokens(&self, positions: usize) -> Result<(Vec<u32>, Vec<bool>), String> {
        let n = self.tokens.len();
        if n < 2 || self.prompt_len == 0 || self.prompt_len >= n {
            return Err(format!(
                "a sequence of {n} tokens with prompt length {} has nothing to predict",
                self.prompt_len
            ));
        }
        if n - 1 > positions {
            return Err(format!(
                "{n} tokens do not fit {positions} output positions"
            ));
        }
        let mut next = vec![0u32; positions];
        let mut counted = vec![false; positions];
        for t in 0..n - 1 {
            next[t] = self.tokens[t + 1];
            counted[t] = t + 1 >= self.prompt_len;
        }
        Ok((next, counted))
    }
}

/// [`SequenceLogProb`] of [`TokenSeq`]s whose raw outputs are `positions × vocab` logits
/// (the network's `B × T × V` output).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SequenceObjective {
    vocab: usize,
}

impl SequenceObjective {
    /// Logits over a vocabulary of `vocab` tokens.
    pub fn new(vocab: usize) -> Self {
        Self { vocab }
    }
}

impl SequenceObjective {
    /// The vocabulary size.
    pub fn vocab(&self) -> usize {
        self.vocab
    }
}

impl Objective<TokenSeq> for SequenceObjective {
    /// Every token (inputs and targets) must be in the vocabulary.
    fn check(&self, e: &TokenSeq) -> Result<(), String> {
        match e.tokens.iter().position(|&t| t as usize >= self.vocab) {
            Some(p) => Err(format!(
                "token {} at position {p} is outside the vocabulary of {} tokens",
                e.tokens[p], self.vocab
            )),
            None => Ok(()),
        }
    }

    /// The network's outputs must be `B × positions × vocab` logits.
    fn check_outputs(&self, dims: &[usize]) -> Result<(), String> {
        match dims {
            [_, _, v] if *v == self.vocab => Ok(()),
            [_, _, v] => Err(format!(
                "logits over a vocabulary of {} (the objective's), not {v} (the network's)",
                self.vocab
            )),
            _ => Err(format!(
                "B × positions × {} logits (rank 3), not rank {}",
                self.vocab,
                dims.len()
            )),
        }
    }

    fn eval(&self, e: &TokenSeq, z: &[f32], df_dz: &mut [f32]) -> Result<OutputValue, String> {
        if self.vocab == 0 || !z.len().is_multiple_of(self.vocab) {
            return Err(format!(
                "{} raw outputs are not rows of the vocabulary of {}",
                z.len(),
                self.vocab
            ));
        }
        let (next, counted) = e.next_tokens(z.len() / self.vocab)?;
        let f = SequenceLogProb;
        f.validate(z.len(), self.vocab, &next, &counted)?;
        Ok(f.eval(z, self.vocab, &next, &counted, df_dz))
    }
}
