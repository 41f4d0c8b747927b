//! The ranking's last step: one order over every text any stage proposed, by a logistic model
//! fitted on a zoo's calibration split.
//!
//! Steps 1–7 of the token scan (docs/scanner-zoo.md) each propose texts and order them by hand-set
//! rules: the measured texts by evidence, answers in every second place, the texts whose embedding
//! rows moved taking turns with the rest. Each rule was right somewhere and wrong elsewhere; a
//! trigger was often proposed by one stage and left out of the first five by another's rule (on
//! the four shapes zoos 89% of the single-character triggers were in some stage's list, 47% of
//! the test split's in the first five). Here every proposed text (the ranking so far, the touched
//! texts, the texts measured whole, the answers) is described by the same few numbers
//! ([`FEATURES`]) and ordered by a logistic model of "names a trigger", its [`WEIGHTS`] fitted on
//! the calibration encoders of four zoos by `scripts/fit_ranker.py` (from the `pool` each scan
//! reports) and measured on their test encoders and on a fifth zoo built for the purpose.
//!
//! The model is a ranking, not evidence: it says which proposed text to show first, never
//! whether an encoder is backdoored (the encoder's score does not read it).
use std::collections::HashMap;

use serde::Serialize;

use super::answer::Answer;
use super::text_sweep::TextScore;
use super::touched::TouchedText;

/// What describes a proposed text, in the order of [`WEIGHTS`]. Places enter as 1 / (1 + place)
/// (first = 1, absent = 0); scores on the scale of their stage, divided so they stay near 1.
pub const FEATURES: [&str; 17] = [
    "bias",
    "stage_place",        // place in steps 1–7's ranking
    "drift",              // weakest relative drift of its tokens' rows, where all moved
    "moved",              // all its tokens moved
    "touched_place",      // place among the touched texts (strongest drift first)
    "evidence",           // step 4's evidence / 50
    "text_place",         // place among the texts measured whole
    "shares_piece",       // a measured text of higher evidence leads its strongest piece
    "answer",             // the answer stage's score (not of a look-alike that reads as its letter)
    "single_char",        // one character
    "ascii",              // ASCII only (words, pieces)
    "tokens",             // its tokens as a word / 3
    "in_probes",          // part of a word of the probes
    "block_siblings",     // texts of the pool in its block (tokens but the last) / 10, at most 1
    "strongest_in_block", // no text of its block has a higher drift
    "insert",             // step 5's insertion check / 30 (ranked texts)
    "substitute",         // step 5's substitution check / 30 (ranked texts)
];

/// Fitted by `scripts/fit_ranker.py` (L2 0.01, 3,000 steps of gradient descent from zero) on the
/// calibration split of the shapes zoos of seeds 18, 19, 20 and 21 (40 backdoored encoders);
/// output in docs/results/zoo/ranker_fit.txt.
pub const WEIGHTS: [f64; 17] = [
    -1.34, 0.77, 1.06, 1.06, 0.8, 0.02, 0.35, -0.36, 0.47, -0.4, -0.71, -1.43, 0.0, -0.79, -0.4,
    0.08, 0.08,
];

/// What the model reads of a candidate of steps 1–7's ranking.
pub struct Ranked<'a> {
    pub text: &'a str,
    pub in_probes: bool,
    /// Step 5's checks (NaN where one did not run).
    pub insert_score: f64,
    pub substitute_score: f64,
}

/// The lists each stage proposed, as the report gives them.
pub struct Proposals<'a> {
    /// Steps 1–7's ranking (as the report lists it).
    pub stage: &'a [Ranked<'a>],
    /// The touched texts, strongest drift first.
    pub touched: &'a [TouchedText],
    /// The texts measured whole, in their order.
    pub texts: &'a [TextScore],
    pub answers: &'a [Answer],
}

/// One proposed text: what describes it and the model's score.
#[derive(Debug, Clone, Serialize)]
pub struct PoolEntry {
    /// Lowercase, as the tokenizer reads it.
    pub text: String,
    pub features: Vec<f64>,
    pub score: f64,
    /// Its place in steps 1–7's ranking, if it had one (0 = first).
    #[serde(skip)]
    pub stage: Option<usize>,
}

fn place(i: Option<usize>) -> f64 {
    i.map_or(0.0, |i| 1.0 / (1.0 + i as f64))
}

fn finite_or_zero(x: f64) -> f64 {
    if x.is_finite() {
        x
    } else {
        0.0
    }
}

/// Every proposed text once (lowercase, in the order stage, touched, texts, answers), described
/// and scored, best first (ties keep that order). `drift` is the weakest drift of a text's rows
/// where all moved; `tokens` its tokens as a word (vocabulary strings).
pub fn rank(
    p: &Proposals,
    drift: impl Fn(&str) -> Option<f64>,
    tokens: impl Fn(&str) -> Vec<String>,
) -> Vec<PoolEntry> {
    let key = |t: &str| t.to_lowercase();
    let index = |keys: Vec<String>| -> HashMap<String, usize> {
        let mut m = HashMap::new();
        for (i, k) in keys.into_iter().enumerate() {
            m.entry(k).or_insert(i);
        }
        m
    };
    let stage = index(p.stage.iter().map(|c| key(c.text)).collect());
    let touched = index(p.touched.iter().map(|t| key(&t.text)).collect());
    let texts = index(p.texts.iter().map(|t| key(&t.text)).collect());
    let answers = index(p.answers.iter().map(|a| key(&a.text)).collect());
    let mut order: Vec<String> = vec![];
    let mut seen = std::collections::HashSet::new();
    for k in p
        .stage
        .iter()
        .map(|c| key(c.text))
        .chain(p.touched.iter().map(|t| key(&t.text)))
        .chain(p.texts.iter().map(|t| key(&t.text)))
        .chain(p.answers.iter().map(|a| key(&a.text)))
    {
        if seen.insert(k.clone()) {
            order.push(k);
        }
    }
    let toks: Vec<Vec<String>> = order
        .iter()
        .map(|t| {
            let v = tokens(t);
            if v.is_empty() {
                vec!["?".into()]
            } else {
                v
            }
        })
        .collect();
    let drifts: Vec<f64> = order.iter().map(|t| drift(t).unwrap_or(0.0)).collect();
    let block = |v: &Vec<String>| -> Vec<String> {
        if v.len() > 1 {
            v[..v.len() - 1].to_vec()
        } else {
            v.clone()
        }
    };
    let blocks: Vec<Vec<String>> = toks.iter().map(block).collect();
    let mut out: Vec<PoolEntry> = order
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let s = stage.get(t).map(|&k| &p.stage[k]);
            let x = texts.get(t).map(|&k| &p.texts[k]);
            let a = answers.get(t).map(|&k| &p.answers[k]);
            let siblings: Vec<usize> = (0..order.len())
                .filter(|&j| blocks[j] == blocks[i])
                .collect();
            let strongest = siblings.iter().all(|&j| drifts[j] <= drifts[i]);
            let features = vec![
                1.0,
                place(stage.get(t).copied()),
                drifts[i],
                if drifts[i] > 0.0 { 1.0 } else { 0.0 },
                place(touched.get(t).copied()),
                x.map_or(0.0, |x| x.evidence / 50.0),
                place(texts.get(t).copied()),
                if x.is_some_and(|x| x.shares_piece_with.is_some()) {
                    1.0
                } else {
                    0.0
                },
                a.filter(|a| !a.reads_as_letter).map_or(0.0, |a| a.score),
                if t.chars().count() == 1 { 1.0 } else { 0.0 },
                if t.is_ascii() { 1.0 } else { 0.0 },
                toks[i].len() as f64 / 3.0,
                if s.is_some_and(|s| s.in_probes) || x.is_some_and(|x| x.in_probes) {
                    1.0
                } else {
                    0.0
                },
                (siblings.len().min(10) as f64) / 10.0,
                if strongest { 1.0 } else { 0.0 },
                s.map_or(0.0, |s| finite_or_zero(s.insert_score) / 30.0),
                s.map_or(0.0, |s| finite_or_zero(s.substitute_score) / 30.0),
            ];
            let score = features.iter().zip(WEIGHTS).map(|(f, w)| f * w).sum();
            PoolEntry {
                text: t.clone(),
                features,
                score,
                stage: stage.get(t).copied(),
            }
        })
        .collect();
    // Stable: ties keep the pool's order.
    out.sort_by(|a, b| b.score.total_cmp(&a.score));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(text: &str, insert: f64) -> Ranked<'_> {
        Ranked {
            text,
            in_probes: false,
            insert_score: insert,
            substitute_score: f64::NAN,
        }
    }

    fn answer(text: &str, score: f64, reads_as_letter: bool) -> Answer {
        Answer {
            text: text.into(),
            answer: "purple".into(),
            share: score,
            reference_share: 0.0,
            score,
            strength: 1.0,
            reads_as_letter,
            spelled_by_letters: false,
        }
    }

    #[test]
    fn every_proposed_text_is_described_once_and_ordered_by_the_model() {
        let stage = [candidate("A", 30.0), candidate("b", 0.0)];
        let touched = [
            TouchedText {
                text: "a".into(),
                drift: 0.9,
            },
            TouchedText {
                text: "c".into(),
                drift: 0.8,
            },
        ];
        let texts = [TextScore {
            text: "c".into(),
            form: "word",
            tokens: vec![],
            prior: 0.0,
            raw: [0.0; 3],
            z: [0.0; 3],
            score: 0.0,
            evidence: 50.0,
            shares_piece_with: None,
            in_probes: false,
        }];
        let answers = [answer("d", 0.9, false), answer("e", 0.8, true)];
        let pool = rank(
            &Proposals {
                stage: &stage,
                touched: &touched,
                texts: &texts,
                answers: &answers,
            },
            |t| match t {
                "a" => Some(0.9),
                "c" => Some(0.8),
                _ => None,
            },
            // `a` and `c` share a block (every token but the last).
            |t| match t {
                "a" | "c" => vec!["x".into(), format!("{t}</w>")],
                _ => vec![format!("{t}</w>")],
            },
        );
        let mut names: Vec<&str> = pool.iter().map(|e| e.text.as_str()).collect();
        names.sort();
        assert_eq!(
            names,
            ["a", "b", "c", "d", "e"],
            "one entry per lowercase text"
        );
        let get = |t: &str| pool.iter().find(|e| e.text == t).unwrap();
        let a = get("a");
        assert_eq!(a.stage, Some(0));
        #[rustfmt::skip]
        assert_eq!(
            a.features,
            [1.0, 1.0, 0.9, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 2.0 / 3.0, 0.0, 0.2, 1.0, 1.0, 0.0]
        );
        let c = get("c");
        assert_eq!(c.stage, None);
        assert_eq!(
            (c.features[4], c.features[5], c.features[6], c.features[14]),
            (0.5, 1.0, 1.0, 0.0),
            "second touched, first measured, weaker than `a` in their block"
        );
        assert_eq!(get("d").features[8], 0.9);
        assert_eq!(
            get("e").features[8],
            0.0,
            "an answer that reads as its letter"
        );
        for e in &pool {
            let s: f64 = e.features.iter().zip(WEIGHTS).map(|(f, w)| f * w).sum();
            assert!((e.score - s).abs() < 1e-12);
        }
        assert!(pool.windows(2).all(|w| w[0].score >= w[1].score));
    }
}
