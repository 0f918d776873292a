//! Planted facts, shared by `lm_facts` and `smollm_facts`: the corpus record (documents and
//! the facts they state), how fact tracing is scored (the rank of the first document that
//! states a query's fact; recall@1, recall@10 and MRR per method), which documents the
//! removal check removes and its row, and the lexical baseline (BM25).

// Shared by several examples and tests; not each uses every item.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};

use ndarray::Array2;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

/// One planted fact.
#[derive(Debug, Clone)]
pub struct Fact {
    /// The made-up entity.
    pub entity: String,
    /// The answer.
    pub answer: String,
    /// The query's prompt ("zorvak lives in", "The hometown of Velmor Orimund is").
    pub prompt: String,
    /// Its completion (" brelton.", " Brinmoor").
    pub completion: String,
    /// The documents that state the fact.
    pub docs: Vec<usize>,
}

/// A planted-facts corpus.
pub struct Corpus {
    /// Document texts.
    pub docs: Vec<String>,
    /// The planted facts.
    pub facts: Vec<Fact>,
}

impl Corpus {
    /// The corpus of `docs` (each tagged with the index of the fact it states, if any) in an
    /// order shuffled with `rng`, each fact's `docs` filled in from the tags.
    pub fn assemble(
        mut docs: Vec<(String, Option<usize>)>,
        mut facts: Vec<Fact>,
        rng: &mut ChaCha8Rng,
    ) -> Self {
        docs.shuffle(rng);
        for (i, (_, f)) in docs.iter().enumerate() {
            if let Some(f) = f {
                facts[*f].docs.push(i);
            }
        }
        Self {
            docs: docs.into_iter().map(|(d, _)| d).collect(),
            facts,
        }
    }

    /// The documents that state each fact (the relevant documents of each query).
    pub fn relevant(&self) -> Vec<Vec<usize>> {
        self.facts.iter().map(|f| f.docs.clone()).collect()
    }

    /// Each query's text: its prompt followed by its completion.
    pub fn query_texts(&self) -> Vec<String> {
        self.facts
            .iter()
            .map(|f| format!("{}{}", f.prompt, f.completion))
            .collect()
    }
}

/// Fact tracing quality of one method.
#[derive(Debug, Clone)]
pub struct FactsRow {
    /// `trak`, `grad-dot`, `grad-cos`, `random` or `lexical`.
    pub method: &'static str,
    /// The attributed layers (`all`, `mlp`, `attention`); `None` where the method does not
    /// use the model (random, lexical) or the example has one layer set.
    pub layers: Option<&'static str>,
    /// Fraction of queries with a stating document ranked first.
    pub recall1: f64,
    /// … in the top 10.
    pub recall10: f64,
    /// Mean reciprocal rank of the first stating document.
    pub mrr: f64,
}

impl FactsRow {
    /// `FACTS method=… [layers=…] recall@1=… recall@10=… mrr=…`.
    pub fn line(&self) -> String {
        let layers = self
            .layers
            .map_or(String::new(), |l| format!(" layers={l}"));
        format!(
            "FACTS method={}{layers} recall@1={:.3} recall@10={:.3} mrr={:.3}",
            self.method, self.recall1, self.recall10, self.mrr
        )
    }
}

/// The removal check of one kind.
#[derive(Debug, Clone)]
pub struct RemovalRow {
    /// `top` (the queries' top proponents), `random`, or another rule the example names.
    pub kind: &'static str,
    /// Documents removed per query.
    pub k: usize,
    /// Queries.
    pub queries: usize,
    /// Documents removed in all (the union over queries; random removes as many).
    pub removed: usize,
    /// Mean change of log p(completion | prompt), retrained minus original.
    pub mean_delta_logp: f64,
}

impl RemovalRow {
    /// `REMOVAL kind=… k=… queries=… removed=… mean_delta_logp=…`.
    pub fn line(&self) -> String {
        format!(
            "REMOVAL kind={} k={} queries={} removed={} mean_delta_logp={:.3}",
            self.kind, self.k, self.queries, self.removed, self.mean_delta_logp
        )
    }
}

/// The fact-tracing row of `method` from its scores (documents × queries); `relevant[q]`
/// lists the documents that state query q's fact.
pub fn tracing(
    relevant: &[Vec<usize>],
    method: &'static str,
    layers: Option<&'static str>,
    s: &Array2<f32>,
) -> FactsRow {
    let ranks: Vec<usize> = relevant
        .iter()
        .enumerate()
        .map(|(q, docs)| first_relevant_rank(&s.column(q).to_vec(), docs))
        .collect();
    let n = ranks.len() as f64;
    FactsRow {
        method,
        layers,
        recall1: ranks.iter().filter(|&&r| r == 1).count() as f64 / n,
        recall10: ranks.iter().filter(|&&r| r <= 10).count() as f64 / n,
        mrr: ranks.iter().map(|&r| 1.0 / r as f64).sum::<f64>() / n,
    }
}

/// The `k` highest-scored documents of column `q` (ties: lower index first).
pub fn top_docs(s: &Array2<f32>, q: usize, k: usize) -> Vec<usize> {
    let col = s.column(q).to_vec();
    let mut order: Vec<usize> = (0..col.len()).collect();
    order.sort_by(|&a, &b| col[b].total_cmp(&col[a]).then(a.cmp(&b)));
    order.truncate(k);
    order
}

/// `docs` without the ones at the indices in `removed` (the removal check's training set).
pub fn without<T: Clone>(docs: &[T], removed: &[usize]) -> Vec<T> {
    let removed: HashSet<usize> = removed.iter().copied().collect();
    docs.iter()
        .enumerate()
        .filter(|(i, _)| !removed.contains(i))
        .map(|(_, d)| d.clone())
        .collect()
}

/// The documents the removal check removes: the union of the `k` highest-scored documents
/// of each query in `queries` (columns of `s`), and as many documents drawn at random from
/// all of them with `rng`.
pub fn removal_sets(
    s: &Array2<f32>,
    queries: &[usize],
    k: usize,
    rng: &mut ChaCha8Rng,
) -> (Vec<usize>, Vec<usize>) {
    let mut top: Vec<usize> = queries.iter().flat_map(|&q| top_docs(s, q, k)).collect();
    top.sort_unstable();
    top.dedup();
    let mut all: Vec<usize> = (0..s.nrows()).collect();
    all.shuffle(rng);
    all.truncate(top.len());
    (top, all)
}

/// BM25 scores of every document for each query (documents × queries).
pub fn bm25_matrix(docs: &[String], queries: &[String]) -> Array2<f32> {
    let mut lex = Array2::zeros((docs.len(), queries.len()));
    for (q, text) in queries.iter().enumerate() {
        lex.column_mut(q)
            .assign(&ndarray::Array1::from(bm25(docs, text)));
    }
    lex
}

/// BM25 scores (k1 = 1.2, b = 0.75) of every document for `query`, over lower-cased words
/// (split at spaces, full stops and commas).
pub fn bm25(docs: &[String], query: &str) -> Vec<f32> {
    let words = |s: &str| -> Vec<String> {
        s.split([' ', '.', ','])
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .collect()
    };
    let tokenized: Vec<Vec<String>> = docs.iter().map(|d| words(d)).collect();
    let avg = tokenized.iter().map(Vec::len).sum::<usize>() as f64 / docs.len() as f64;
    let mut df: HashMap<&str, usize> = HashMap::new();
    for d in &tokenized {
        for w in d.iter().collect::<HashSet<_>>() {
            *df.entry(w.as_str()).or_default() += 1;
        }
    }
    let n = docs.len() as f64;
    let q = words(query);
    tokenized
        .iter()
        .map(|d| {
            q.iter()
                .map(|w| {
                    let tf = d.iter().filter(|x| *x == w).count() as f64;
                    let dfw = *df.get(w.as_str()).unwrap_or(&0) as f64;
                    let idf = ((n - dfw + 0.5) / (dfw + 0.5) + 1.0).ln();
                    idf * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * d.len() as f64 / avg))
                })
                .sum::<f64>() as f32
        })
        .collect()
}

/// Rank (1-based) of the first relevant document when `scores` are sorted descending (ties:
/// lower index first).
pub fn first_relevant_rank(scores: &[f32], relevant: &[usize]) -> usize {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    order
        .iter()
        .position(|i| relevant.contains(i))
        .map_or(scores.len() + 1, |p| p + 1)
}
