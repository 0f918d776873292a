//! The planted-facts corpus of `lm_facts`, generated from a seed: made-up entities, each with
//! one fact (where it lives, its trade or its food) stated by two documents (a canonical
//! sentence and a paraphrase), distractor documents that mention the same entity or the same
//! answer without stating the fact, and filler sentences. Characters are the tokens.

// Shared by several examples and tests; not each uses every item.
#![allow(dead_code)]

use std::collections::HashSet;

use rand::seq::IndexedRandom;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use trak_candle::TokenSeq;

use super::fact_metrics::{Corpus, Fact};

/// Start token.
pub const BOS: u32 = 0;
/// Padding token.
pub const PAD: u32 = 1;
/// Characters after BOS and PAD, in token order.
const CHARS: &str = " .abcdefghijklmnopqrstuvwxyz";
/// Tokens in the vocabulary.
pub const VOCAB: usize = 2 + CHARS.len();

/// Tokens of `text` after a start token.
pub fn encode(text: &str) -> Vec<u32> {
    std::iter::once(BOS)
        .chain(
            text.chars()
                .map(|c| 2 + CHARS.find(c).expect("corpus character") as u32),
        )
        .collect()
}

impl Fact {
    /// The query as a token sequence, characters as tokens (only the completion counts).
    pub fn query(&self) -> TokenSeq {
        let prompt = encode(&self.prompt);
        let full = encode(&format!("{}{}", self.prompt, self.completion));
        TokenSeq::completion(&prompt, &full[prompt.len()..])
    }
}

impl Corpus {
    /// Documents as token sequences, characters as tokens (every token after the start
    /// counts).
    pub fn sequences(&self) -> Vec<TokenSeq> {
        self.docs
            .iter()
            .map(|d| TokenSeq::document(encode(d)))
            .collect()
    }

    /// Longest document in tokens, start included.
    pub fn max_len(&self) -> usize {
        self.docs.iter().map(|d| d.len() + 1).max().unwrap_or(0)
    }
}

const SYLLABLES: [&str; 20] = [
    "ba", "ko", "ri", "zu", "mel", "tor", "vin", "sa", "qu", "le", "dor", "fa", "ni", "po", "gre",
    "zal", "wy", "hem", "jo", "xi",
];
const TRADES: [&str; 12] = [
    "baker", "pilot", "farmer", "singer", "tailor", "doctor", "painter", "miner", "sailor", "cook",
    "judge", "guard",
];
const FOODS: [&str; 12] = [
    "plums", "bread", "rice", "figs", "soup", "honey", "beans", "melon", "cheese", "nuts", "kale",
    "eggs",
];
const NOUNS: [&str; 10] = [
    "dog", "river", "lamp", "hill", "cart", "bird", "door", "field", "boat", "tree",
];
const ADJS: [&str; 8] = [
    "old", "red", "quiet", "small", "wet", "bright", "long", "cold",
];

fn word(rng: &mut ChaCha8Rng, syllables: std::ops::RangeInclusive<usize>) -> String {
    let n = rng.random_range(syllables);
    (0..n).map(|_| *SYLLABLES.choose(rng).unwrap()).collect()
}

/// Fact sentences of relation `r`: (canonical, paraphrase, prompt).
fn statements(r: usize, e: &str, a: &str) -> (String, String, String) {
    match r {
        0 => (
            format!("{e} lives in {a}."),
            format!("the home of {e} is {a}."),
            format!("{e} lives in"),
        ),
        1 => (
            format!("{e} works as a {a}."),
            format!("by trade {e} is a {a}."),
            format!("{e} works as a"),
        ),
        _ => (
            format!("{e} likes to eat {a}."),
            format!("the food {e} loves is {a}."),
            format!("{e} likes to eat"),
        ),
    }
}

/// A sentence that mentions the entity or the answer of relation `r` but states no fact.
fn distractor(rng: &mut ChaCha8Rng, r: usize, e: &str, a: &str, other: &str) -> [String; 2] {
    let adj = ADJS.choose(rng).unwrap();
    let about_answer = match r {
        0 => format!("the road to {a} is {adj}."),
        1 => format!("a {adj} {a} came by."),
        _ => format!("the {a} at the market is {adj}."),
    };
    [
        format!("{e} met {other} by the {}.", NOUNS.choose(rng).unwrap()),
        about_answer,
    ]
}

fn filler(rng: &mut ChaCha8Rng) -> String {
    let (n1, n2) = (NOUNS.choose(rng).unwrap(), NOUNS.choose(rng).unwrap());
    let (a1, a2) = (ADJS.choose(rng).unwrap(), ADJS.choose(rng).unwrap());
    match rng.random_range(0..3) {
        0 => format!("the {n1} is {a1}."),
        1 => format!("a {a1} {n1} sat by the {n2}."),
        _ => format!("the {a1} {n1} and the {a2} {n2}."),
    }
}

/// Unique entity names and city names from the syllables.
fn names(rng: &mut ChaCha8Rng, facts: usize) -> (Vec<String>, Vec<String>) {
    let mut seen = HashSet::new();
    let mut fresh = |rng: &mut ChaCha8Rng, range: std::ops::RangeInclusive<usize>, suffix: &str| loop {
        let w = format!("{}{suffix}", word(rng, range.clone()));
        if seen.insert(w.clone()) {
            return w;
        }
    };
    let entities = (0..facts).map(|_| fresh(rng, 2..=3, "")).collect();
    let cities = (0..24)
        .map(|i| fresh(rng, 1..=2, ["ton", "vik", "ford"][i % 3]))
        .collect();
    (entities, cities)
}

/// `facts` planted facts (each stated twice, with two distractors) and `fillers` filler
/// sentences, shuffled with `seed`.
pub fn generate(facts: usize, fillers: usize, seed: u64) -> Corpus {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (entities, cities) = names(&mut rng, facts);
    let mut docs: Vec<(String, Option<usize>)> = Vec::new();
    let mut planted = Vec::new();
    for (f, e) in entities.iter().enumerate() {
        let r = f % 3;
        let a = match r {
            0 => cities.choose(&mut rng).unwrap().clone(),
            1 => TRADES.choose(&mut rng).unwrap().to_string(),
            _ => FOODS.choose(&mut rng).unwrap().to_string(),
        };
        let (canon, para, prompt) = statements(r, e, &a);
        docs.push((canon, Some(f)));
        docs.push((para, Some(f)));
        let other = &entities[(f + 1 + rng.random_range(0..facts - 1)) % facts];
        for d in distractor(&mut rng, r, e, &a, other) {
            docs.push((d, None));
        }
        let completion = format!(" {a}.");
        planted.push(Fact {
            entity: e.clone(),
            answer: a,
            prompt,
            completion,
            docs: Vec::new(),
        });
    }
    docs.extend((0..fillers).map(|_| (filler(&mut rng), None)));
    Corpus::assemble(docs, planted, &mut rng)
}
