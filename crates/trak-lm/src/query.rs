//! `trak-lm query RUN --queries FILE`: each query's top training documents, as text,
//! `--json`, per-token splits (`--tokens`) or an HTML page (`--html`).

use std::path::{Path, PathBuf};

use trak_candle::TokenSeq;
use trak_candle::lm::{Corpus, LmTokenizer, Record};
use trak_candle::trak::ndarray::Array2;
use trak_candle::trak::store::Run;
use trak_candle::trak::{self, Trak};

use crate::args::Args;
use crate::attrib;
use crate::error::CliError;
use crate::progress::Eta;
use crate::record::{self, IndexRecord};
use crate::split::{self, TokenSplit};

pub const OPTIONS: &[&str] = &["--queries", "--top", "--html", "--memory-limit"];
pub const FLAGS: &[&str] = &["--json", "--tokens", "--quiet"];

/// A run opened for querying: its record, settings, corpus and tokenizer.
pub struct Opened {
    pub rec: IndexRecord,
    pub trak: Trak,
    pub run: Run,
    pub tok: LmTokenizer,
    pub corpus: Corpus,
}

impl Opened {
    pub fn open(dir: &Path, memory: Option<usize>) -> trak::Result<Self> {
        let rec: IndexRecord = record::read(&dir.join("trak-lm.json"))?;
        let trak = attrib::trak_config(&rec, memory)?;
        let run = Run::open(dir)?;
        let tok = attrib::tokenizer(&rec)?;
        let corpus = Corpus::read(&rec.data, &rec.fields.fields(), &tok)?;
        Ok(Self {
            rec,
            trak,
            run,
            tok,
            corpus,
        })
    }

    /// The queries of a JSONL file (`{"prompt", "completion"}` or `{"text"}`).
    pub fn queries(&self, path: &Path) -> trak::Result<Corpus> {
        Corpus::read(path, &trak_candle::lm::Fields::default(), &self.tok)
    }

    /// Query features at every checkpoint and the scores (documents × queries).
    pub fn score(
        &self,
        queries: &[TokenSeq],
        quiet: bool,
    ) -> trak::Result<(Vec<Array2<f32>>, Array2<f32>)> {
        let psis = attrib::query_features(&self.rec, &self.trak, queries, quiet)?;
        let scores = attrib::scores(&self.run, &attrib::target_name(queries), &psis)?;
        Ok((psis, scores))
    }
}

pub fn run(args: &[String]) -> Result<(), CliError> {
    let args = Args::parse(args, OPTIONS, FLAGS)?;
    let dir = PathBuf::from(args.positional(0, "RUN (the index directory)")?);
    let quiet = args.flag("--quiet");
    let opened = Opened::open(&dir, args.bytes("--memory-limit")?)?;
    let queries = opened.queries(&args.path("--queries")?)?;
    let top: usize = args.parsed("--top", 10)?;
    let t0 = std::time::Instant::now();
    let (psis, scores) = opened.score(&queries.sequences(), quiet)?;
    Eta::new("query", quiet).note(format!(
        "{} queries scored against {} documents in {:.2} s",
        queries.len(),
        opened.corpus.len(),
        t0.elapsed().as_secs_f64()
    ));
    let splits = match args.flag("--tokens") || args.value("--html").is_some() {
        true => Some(split::splits(&opened, &psis, &scores, top, quiet)?),
        false => None,
    };
    if let Some(html) = args.value("--html") {
        let page = crate::html::page(
            &opened,
            &queries,
            &scores,
            top,
            splits.as_deref().unwrap_or(&[]),
        );
        trak::store::write_atomic(Path::new(html), page.as_bytes())?;
    }
    for (q, query) in queries.records.iter().enumerate() {
        let best = attrib::top_docs(&scores, q, top);
        match args.flag("--json") {
            true => println!("{}", json_line(q, &best, &opened.corpus.records)),
            false => print_query(
                q,
                query,
                &best,
                &opened.corpus.records,
                splits.as_ref().map(|s| &s[q]),
            ),
        }
    }
    Ok(())
}

/// `{"query": i, "top": [{"doc": LINE, "score": S}, …]}`.
fn json_line(q: usize, best: &[(usize, f32)], docs: &[Record]) -> String {
    let top: Vec<serde_json::Value> = best
        .iter()
        .map(|&(d, s)| serde_json::json!({"doc": docs[d].line, "score": s}))
        .collect();
    serde_json::json!({"query": q, "top": top}).to_string()
}

/// The start of a text, on one line.
pub fn preview(text: &str, chars: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_whitespace() { ' ' } else { c })
        .collect();
    match flat.chars().count() > chars {
        true => format!("{}…", flat.chars().take(chars).collect::<String>()),
        false => flat,
    }
}

fn print_query(
    q: usize,
    query: &Record,
    best: &[(usize, f32)],
    docs: &[Record],
    split: Option<&Vec<TokenSplit>>,
) {
    println!("query {q}: {:?}", preview(&query.content.text(), 100));
    for (rank, &(d, s)) in best.iter().enumerate() {
        let line = docs[d].line;
        println!(
            "  {:>3}. line {line:<6} score {s:>12.5e}  {}",
            rank + 1,
            preview(&docs[d].content.text(), 80)
        );
        if let Some(t) = split.and_then(|s| s.get(rank)) {
            println!("       tokens: {}", t.marked());
        }
    }
}
