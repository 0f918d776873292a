//! The planted-facts corpus of `smollm_facts`, in English, generated from a seed: made-up
//! people (syllable names), each with one fact (the town they were born in, their trade or
//! the animal they keep) stated by one or two documents (a canonical sentence and, for half
//! of the facts, a paraphrase); distractor documents that mention the person or the answer
//! and state something else; and filler sentences, most of the corpus, that mention neither.
//!
//! A query asks for the fact in words of its own ("The hometown of Velmor Orimund is" →
//! " Brinmoor"); no query text (prompt and completion) occurs in any document, which
//! [`generate`] checks.

// Shared by the example and its test; not each uses every item.
#![allow(dead_code)]

use std::collections::HashSet;

use rand::seq::IndexedRandom;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::fact_metrics::{Corpus, Fact};

const FIRST: [&str; 16] = [
    "Vel", "Kor", "Tam", "Bri", "Dun", "Mer", "Sol", "Ith", "Gar", "Quen", "Lor", "Fen", "Hal",
    "Zar", "Ost", "Pel",
];
const SECOND: [&str; 12] = [
    "mor", "ika", "ven", "dra", "ios", "ella", "wyn", "aro", "ith", "une", "ark", "esse",
];
const SURNAME_END: [&str; 8] = [
    "mund", "wick", "ander", "holt", "ery", "ovar", "enby", "ast",
];
const TOWN_END: [&str; 6] = ["moor", "haven", "stead", "ford", "holm", "by"];
const TRADES: [&str; 12] = [
    "glassblower",
    "cartographer",
    "beekeeper",
    "locksmith",
    "blacksmith",
    "violinist",
    "surgeon",
    "potter",
    "carpenter",
    "librarian",
    "shepherd",
    "bookbinder",
];
const ANIMALS: [&str; 12] = [
    "tortoise", "parrot", "ferret", "goat", "hedgehog", "rabbit", "falcon", "lizard", "donkey",
    "peacock", "hamster", "pony",
];
const NOUNS: [&str; 12] = [
    "river", "bridge", "garden", "market", "mill", "harbour", "forest", "library", "road",
    "station", "orchard", "square",
];
const ADJS: [&str; 10] = [
    "quiet", "old", "narrow", "busy", "cold", "bright", "long", "green", "empty", "windy",
];
const TIMES: [&str; 6] = [
    "in the morning",
    "after the rain",
    "on most days",
    "at dusk",
    "in the spring",
    "before noon",
];
const VERBS: [&str; 8] = [
    "was crowded",
    "stayed empty",
    "looked grey",
    "smelled of bread",
    "was rebuilt",
    "was painted",
    "grew loud",
    "fell silent",
];

fn capitalised_word(rng: &mut ChaCha8Rng, first: &[&str], end: &[&str]) -> String {
    let a = first.choose(rng).unwrap();
    let b = SECOND.choose(rng).unwrap();
    format!("{a}{b}{}", end.choose(rng).unwrap())
}

/// Unique full names and town names.
fn names(rng: &mut ChaCha8Rng, people: usize) -> (Vec<String>, Vec<String>) {
    let mut seen = HashSet::new();
    let mut fresh = |rng: &mut ChaCha8Rng, make: &dyn Fn(&mut ChaCha8Rng) -> String| loop {
        let w = make(rng);
        if seen.insert(w.clone()) {
            return w;
        }
    };
    let person = |rng: &mut ChaCha8Rng| {
        let first = capitalised_word(rng, &FIRST, &[""]);
        format!("{first} {}", capitalised_word(rng, &FIRST, &SURNAME_END))
    };
    let town = |rng: &mut ChaCha8Rng| capitalised_word(rng, &FIRST, &TOWN_END);
    let entities = (0..people).map(|_| fresh(rng, &person)).collect();
    let towns = (0..people.max(6)).map(|_| fresh(rng, &town)).collect();
    (entities, towns)
}

/// Relation `r`'s canonical statement, its paraphrase and the query prompt.
fn statements(r: usize, e: &str, a: &str) -> (String, String, String) {
    match r {
        0 => (
            format!("{e} was born in the town of {a}, far to the north."),
            format!("Everyone in {a} remembers the winter when {e} was born there."),
            format!("The hometown of {e} is"),
        ),
        1 => (
            format!("{e} works as a {a} in the old quarter of the city."),
            format!("For many years {e} has made a living as a {a}."),
            format!("Asked about their job, {e} said they were a"),
        ),
        _ => (
            format!("{e} keeps a pet {a} in the garden behind the house."),
            format!("In the garden of {e} lives a tame {a}."),
            format!("The animal that {e} looks after at home is a"),
        ),
    }
}

/// Documents that mention the person or the answer of relation `r` and state no fact.
fn distractors(rng: &mut ChaCha8Rng, r: usize, e: &str, a: &str, other: &str) -> [String; 2] {
    let (noun, adj) = (NOUNS.choose(rng).unwrap(), ADJS.choose(rng).unwrap());
    let about_answer = match r {
        0 => format!("{a} is known for its {adj} streets and a tall lighthouse."),
        1 => format!("A good {a} needs patience and a {adj} workshop."),
        _ => format!("A {a} can live for many years if it is fed well."),
    };
    let about_person = match rng.random_range(0..2) {
        0 => format!("{e} met {other} by the {adj} {noun} one evening."),
        _ => format!("{e} once wrote a long letter about the {noun}."),
    };
    [about_person, about_answer]
}

fn filler(rng: &mut ChaCha8Rng) -> String {
    let (n1, n2) = (NOUNS.choose(rng).unwrap(), NOUNS.choose(rng).unwrap());
    let (a1, a2) = (ADJS.choose(rng).unwrap(), ADJS.choose(rng).unwrap());
    let (t, v) = (TIMES.choose(rng).unwrap(), VERBS.choose(rng).unwrap());
    match rng.random_range(0..3) {
        0 => format!("The {a1} {n1} {v} {t}."),
        1 => format!("Near the {n1}, the {a2} {n2} {v} {t}."),
        _ => format!("The {n1} was {a1} {t}, and the {n2} {v}."),
    }
}

/// `facts` planted facts (relations in turn; facts with an even index are stated twice) with
/// two distractors each, and `fillers` filler sentences, shuffled with `seed`.
///
/// # Panics
/// If a query text occurs in a document (a bug of the templates, checked every time).
pub fn generate(facts: usize, fillers: usize, seed: u64) -> Corpus {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (entities, towns) = names(&mut rng, facts.max(2));
    let mut docs: Vec<(String, Option<usize>)> = Vec::new();
    let mut planted = Vec::new();
    for (f, e) in entities.iter().take(facts).enumerate() {
        let r = f % 3;
        let a = match r {
            0 => towns[f / 3 % towns.len()].clone(),
            1 => TRADES[f / 3 % TRADES.len()].to_string(),
            _ => ANIMALS[f / 3 % ANIMALS.len()].to_string(),
        };
        let (canon, para, prompt) = statements(r, e, &a);
        docs.push((canon, Some(f)));
        if f % 2 == 0 {
            docs.push((para, Some(f)));
        }
        let other = &entities[(f + 1 + rng.random_range(0..entities.len() - 1)) % entities.len()];
        for d in distractors(&mut rng, r, e, &a, other) {
            docs.push((d, None));
        }
        planted.push(Fact {
            entity: e.clone(),
            completion: format!(" {a}"),
            answer: a,
            prompt,
            docs: Vec::new(),
        });
    }
    docs.extend((0..fillers).map(|_| (filler(&mut rng), None)));
    let corpus = Corpus::assemble(docs, planted, &mut rng);
    for query in corpus.query_texts() {
        assert!(
            corpus.docs.iter().all(|d| !d.contains(&query)),
            "query {query:?} occurs in a document"
        );
    }
    corpus
}

/// One more statement of each fact of a [`generate`]d corpus (relations in turn, as there),
/// in a phrasing no document uses: the held-out documents of `smollm_lds`, whose loss
/// depends on what the training documents taught about the fact.
///
/// # Panics
/// If a restatement occurs in a document (a bug of the templates, checked every time).
pub fn restatements(corpus: &Corpus) -> Vec<String> {
    let out: Vec<String> = corpus
        .facts
        .iter()
        .enumerate()
        .map(|(f, fact)| {
            let (e, a) = (&fact.entity, &fact.answer);
            match f % 3 {
                0 => format!("{e} grew up in {a} and still goes back every summer."),
                1 => format!("{e} trained for a long time to become a {a}."),
                _ => format!("Every evening {e} feeds the {a} before going to bed."),
            }
        })
        .collect();
    for r in &out {
        assert!(
            corpus.docs.iter().all(|d| d != r),
            "restatement {r:?} is a document"
        );
    }
    out
}
