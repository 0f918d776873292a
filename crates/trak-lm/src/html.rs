//! `query --html FILE`: one self-contained page (inline CSS, no script, no external file):
//! each query, its top documents with their scores, each document's tokens shaded by their
//! share of the score (green for a positive share, red for a negative one; the share and the
//! token's part of the score in its tooltip).

use trak_candle::lm::{Content, Corpus};
use trak_candle::trak::ndarray::Array2;

use crate::attrib;
use crate::query::Opened;
use crate::split::TokenSplit;

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:60em;margin:2em auto;color:#222}\
h1{font-size:1.4em}section{border-top:1px solid #ccc;margin-top:1.5em}\
h2{font-size:1.1em}.q{font-family:monospace;background:#f4f4f4;padding:.2em .4em}\
ol{padding-left:1.5em}li{margin:.6em 0}.meta{color:#666;font-size:.9em}\
.doc{font-family:monospace;white-space:pre-wrap;line-height:1.7}.ctx{color:#999}\
.t{border-radius:3px;padding:1px 0}";

/// HTML-escapes text.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A token's span, its background's opacity proportional to its share (1 at the document's
/// largest |share|).
fn token_span(text: &str, share: f64, max: f64, score: f32) -> String {
    let a = (share.abs() / max.max(f64::MIN_POSITIVE)).min(1.0);
    let rgb = if share >= 0.0 {
        "34,160,70"
    } else {
        "210,50,50"
    };
    format!(
        "<span class=\"t\" style=\"background:rgba({rgb},{a:.3})\" title=\"share {:+.1}%, part of the score {:+.4e}\">{}</span>",
        100.0 * share,
        share * score as f64,
        esc(text)
    )
}

fn document(split: Option<&TokenSplit>, text: &str, score: f32) -> String {
    let Some(s) = split else {
        return format!("<div class=\"doc\">{}</div>", esc(text));
    };
    let max = s.tokens.iter().map(|(_, v)| v.abs()).fold(0.0, f64::max);
    let spans: String = s
        .tokens
        .iter()
        .map(|(t, v)| token_span(t, *v, max, score))
        .collect();
    format!(
        "<div class=\"doc\"><span class=\"ctx\">{}</span>{spans}</div>",
        esc(&s.context)
    )
}

/// The page.
pub fn page(
    o: &Opened,
    queries: &Corpus,
    scores: &Array2<f32>,
    top: usize,
    splits: &[Vec<TokenSplit>],
) -> String {
    let mut body = String::new();
    for (q, query) in queries.records.iter().enumerate() {
        let text = match &query.content {
            Content::Text(t) => esc(t),
            Content::Completion { prompt, completion } => {
                format!("{}<b>{}</b>", esc(prompt), esc(completion))
            }
        };
        body +=
            &format!("<section id=\"query-{q}\"><h2>Query {q}</h2><p class=\"q\">{text}</p><ol>");
        for (rank, (d, s)) in attrib::top_docs(scores, q, top).into_iter().enumerate() {
            let rec = &o.corpus.records[d];
            let split = splits.get(q).and_then(|v| v.get(rank));
            body += &format!(
                "<li class=\"hit\" data-doc=\"{}\"><div class=\"meta\">line {} · score {s:.4e}</div>{}</li>",
                rec.line,
                rec.line,
                document(split, &rec.content.text(), s)
            );
        }
        body += "</ol></section>";
    }
    format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>trak-lm: top training documents</title><style>{STYLE}</style></head><body><h1>Top training documents</h1><p class=\"meta\">Each query's completion is in bold. A document's tokens are shaded by their share of its score: green where they raise it, red where they lower it, darker for a larger share (hover over a token for its share and its part of the score); grey text is the context before the first counted token.</p><p class=\"meta\">{} queries · {} documents · {} checkpoints · k = {} · corpus {}</p>{body}</body></html>\n",
        queries.len(),
        o.corpus.len(),
        o.rec.checkpoints.len(),
        o.rec.k,
        esc(&o.rec.data.display().to_string())
    )
}
