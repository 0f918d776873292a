//! A top document's score split over its tokens: each counted token's features (the
//! projected gradient of its own log-probability, given the tokens before it) dotted with
//! every checkpoint's solved query features, averaged as the scores are. The token features
//! sum to the document's, so the shares sum to the score up to rounding (`error`).

use trak_candle::TokenSeq;
use trak_candle::trak::ndarray::{Array2, ArrayView1, s};
use trak_candle::trak::{self, TrakIndex};

use crate::attrib;
use crate::progress::Eta;
use crate::query::Opened;

/// One document's split for one query.
#[derive(Debug, Clone)]
pub struct TokenSplit {
    /// Each counted token's text and its share of the score (shares sum to 1).
    pub tokens: Vec<(String, f64)>,
    /// The context tokens before the counted ones (the start token, a prompt).
    pub context: String,
    /// |Σ token parts − document part| / |document part|.
    pub error: f64,
}

impl TokenSplit {
    /// The text with tokens of ≥ 10 % of the score marked `[token|+23%]`.
    pub fn marked(&self) -> String {
        let body: String = self
            .tokens
            .iter()
            .map(|(t, s)| match s.abs() >= 0.1 {
                true => format!("[{t}|{:+.0}%]", 100.0 * s),
                false => t.clone(),
            })
            .collect();
        format!("{body:?} (split error {:.1e})", self.error)
    }
}

/// The splits of every query's `top` documents (`[query][rank]`): the tokens of every
/// distinct top document featurised in one call per checkpoint.
pub fn splits(
    o: &Opened,
    psis: &[Array2<f32>],
    scores: &Array2<f32>,
    top: usize,
    quiet: bool,
) -> trak::Result<Vec<Vec<TokenSplit>>> {
    let features = o.run.train_features()?;
    let index: TrakIndex = o.run.train_features()?.finalize()?;
    let solved = (0u64..)
        .zip(psis)
        .map(|(m, p)| index.solve_targets(m, p.view()))
        .collect::<trak::Result<Vec<_>>>()?;
    let wanted: Vec<Vec<usize>> = (0..scores.ncols())
        .map(|q| {
            attrib::top_docs(scores, q, top)
                .into_iter()
                .map(|(d, _)| d)
                .collect()
        })
        .collect();
    let mut docs: Vec<usize> = wanted.iter().flatten().copied().collect();
    docs.sort_unstable();
    docs.dedup();
    let mut pieces = Vec::new();
    let mut spans = Vec::new();
    for &d in &docs {
        let p = token_pieces(&o.corpus.records[d].seq);
        spans.push(pieces.len()..pieces.len() + p.len());
        pieces.extend(p);
    }
    // parts[q][rank] = (doc, per-token sums, whole-document sum), over checkpoints.
    let mut parts: Vec<Vec<(usize, Vec<f64>, f64)>> = wanted
        .iter()
        .map(|ds| ds.iter().map(|&d| (d, Vec::new(), 0.0)).collect())
        .collect();
    let mut eta = Eta::new("token splits", quiet);
    for (m, path) in o.rec.checkpoints.iter().enumerate() {
        let ckpt = attrib::load(path)?;
        let net = ckpt.model()?;
        let model = attrib::adapter(&o.rec, &net, &o.corpus.sequences())?;
        let per = o.trak.features(m as u64, &model, &pieces)?;
        let phi = features
            .features(m as u64)
            .ok_or(trak::Error::UnknownCheckpoint(m as u64))?;
        for (q, row) in parts.iter_mut().enumerate() {
            let y = solved[m].column(q);
            for (d, shares, whole) in row.iter_mut() {
                let span = spans[docs.binary_search(d).expect("a wanted document")].clone();
                shares.resize(span.len(), 0.0);
                for (acc, r) in shares.iter_mut().zip(per.slice(s![span, ..]).rows()) {
                    *acc += dot(r, y);
                }
                *whole += dot(phi.row(*d), y);
            }
        }
        eta.report(m + 1, o.rec.checkpoints.len(), "checkpoints");
    }
    Ok(parts
        .into_iter()
        .map(|qs| {
            qs.into_iter()
                .map(|(d, shares, whole)| finish(o, d, shares, whole))
                .collect()
        })
        .collect())
}

/// One sequence per counted token: the tokens before it as the prompt, it as the completion.
fn token_pieces(seq: &TokenSeq) -> Vec<TokenSeq> {
    (seq.prompt_len.max(1)..seq.tokens.len())
        .map(|p| TokenSeq::completion(&seq.tokens[..p], &seq.tokens[p..=p]))
        .collect()
}

fn dot(row: ArrayView1<'_, f32>, y: ArrayView1<'_, f64>) -> f64 {
    row.iter().zip(y.iter()).map(|(&a, &b)| a as f64 * b).sum()
}

fn finish(o: &Opened, d: usize, shares: Vec<f64>, whole: f64) -> TokenSplit {
    let seq = &o.corpus.records[d].seq;
    let total: f64 = shares.iter().sum();
    let first = seq.prompt_len.max(1);
    TokenSplit {
        tokens: seq.tokens[first..]
            .iter()
            .zip(&shares)
            .map(|(&t, s)| (o.tok.decode(&[t]), s / total))
            .collect(),
        context: o.tok.decode(&seq.tokens[..first]),
        error: (total - whole).abs() / whole.abs().max(f64::MIN_POSITIVE),
    }
}
