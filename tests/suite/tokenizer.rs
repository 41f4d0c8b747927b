//! CLIP tokenizer parity with transformers.CLIPTokenizer on a hostile corpus.
use crate::common;

use clipdoor::text::tokenizer::{ClipTokenizer, EOS};

fn corpus() -> Vec<String> {
    let long = "a very long prompt about a red fox jumping over the lazy dog ".repeat(12);
    [
        "a photo of an astronaut riding a horse on mars",
        "",
        " ",
        "A Photo OF a CAT",
        // homoglyphs: Cyrillic о/а/е/с/р, Greek ο/α/ρ, Armenian օ, Oriya ଠ, Latin Extended ọ ɑ, fullwidth
        "a phоtо of a cat",
        "а рhοtο οf α cаt",
        "an օld man with a ଠ hat",
        "Bọ́ng đá ɑnd ꭺ ᏗᏰᏟ",
        "ｆｕｌｌｗｉｄｔｈ ｔｅｘｔ ＡＢＣ １２３",
        "Ｃｏｆｆｅｅ ｃｕｐ！",
        // emoji with joiners, skin tones, flags, keycaps
        "family 👨‍👩‍👧‍👦 and 👍🏽 at 🇩🇪 1️⃣",
        "🏳️‍🌈 rainbow flag, ❤️‍🔥",
        // CJK, right-to-left, Indic, Thai
        "東京タワーの夜景、美しい",
        "한국어 프롬프트 테스트",
        "שלום עולם and مرحبا بالعالم",
        "नमस्ते दुनिया ภาษาไทย",
        // odd whitespace and invisible characters
        "tabs\tand\nnewlines\r\nand\u{00a0}nbsp\u{2003}em\u{3000}ideographic",
        "zero\u{200b}width\u{200d}joiner\u{feff}bom\u{202e}rtl override",
        "   leading and trailing   ",
        // combining marks (NFC), ligatures, case
        "cafe\u{0301} naïve façade ﬁne ﬂow",
        "ÀÉÎÕÜ ŁÓDŹ ÆØÅ ß",
        // apostrophes, punctuation, numbers, special-token text
        "don't you've we'll I'm it's they'd",
        "12345 3.14159 1,000,000 $99.99 #hashtag @user",
        "!!! ??? ... --- *** (((brackets))) [weights:1.2]",
        "<|endoftext|> inside <|startoftext|> text",
        "hello!world!",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([long.clone(), format!("{long}{long}"), "word ".repeat(200)])
    .collect()
}

fn python_ids(dir: &std::path::Path, texts: &[String]) -> Vec<Vec<i64>> {
    let corpus = dir.join("corpus.json");
    std::fs::write(&corpus, serde_json::to_string(texts).unwrap()).unwrap();
    let out = common::run_py(
        "clip_text_ref.py",
        &["tokenize", dir.to_str().unwrap(), corpus.to_str().unwrap()],
    );
    serde_json::from_str(&out).unwrap()
}

fn assert_same(rust: &ClipTokenizer, texts: &[String], expected: &[Vec<i64>], what: &str) {
    let mut bad = 0;
    for (t, e) in texts.iter().zip(expected) {
        let got = rust.encode(t).unwrap();
        if &got != e {
            bad += 1;
            if bad <= 3 {
                eprintln!("{what}: mismatch for {t:?}\n rust {got:?}\n  py  {e:?}");
            }
        }
    }
    assert_eq!(
        bad,
        0,
        "{what}: {bad} of {} prompts tokenise differently",
        texts.len()
    );
}

#[test]
fn sd1_tokenizer_matches_transformers_on_hostile_corpus() {
    let tmp = common::tmp();
    common::run_py(
        "clip_text_ref.py",
        &["tokenizer", tmp.path().to_str().unwrap(), EOS],
    );
    let texts = corpus();
    let expected = python_ids(tmp.path(), &texts);
    assert!(expected.iter().all(|e| e.len() == 77));
    // from the folder transformers wrote (tokenizer.json or vocab.json + merges.txt)
    assert_same(
        &ClipTokenizer::from_folder(tmp.path()).unwrap(),
        &texts,
        &expected,
        "folder",
    );
    // from the embedded raw BPE file
    assert_same(
        &ClipTokenizer::embedded(EOS).unwrap(),
        &texts,
        &expected,
        "embedded",
    );
    // tokenizer.json alone (what many hub repos ship)
    std::fs::remove_file(tmp.path().join("vocab.json")).unwrap();
    std::fs::remove_file(tmp.path().join("merges.txt")).unwrap();
    assert_same(
        &ClipTokenizer::from_folder(tmp.path()).unwrap(),
        &texts,
        &expected,
        "tokenizer.json",
    );
    // truncation keeps EOS; padding with EOS
    let long = ClipTokenizer::embedded(EOS)
        .unwrap()
        .encode(&"word ".repeat(200))
        .unwrap();
    assert_eq!((long[0], long[76]), (49406, 49407));
    let empty = ClipTokenizer::embedded(EOS).unwrap().encode("").unwrap();
    assert_eq!(&empty[..3], &[49406, 49407, 49407]);
}

#[test]
fn sd2_tokenizer_pads_with_bang() {
    let tmp = common::tmp();
    common::run_py(
        "clip_text_ref.py",
        &["tokenizer", tmp.path().to_str().unwrap(), "!"],
    );
    let texts = corpus();
    let expected = python_ids(tmp.path(), &texts);
    let tok = ClipTokenizer::from_folder(tmp.path()).unwrap();
    assert_eq!(tok.pad_token(), "!");
    assert_eq!(tok.pad_id(), 0);
    assert_same(&tok, &texts, &expected, "sd2 folder");
    assert_same(
        &ClipTokenizer::embedded("!").unwrap(),
        &texts,
        &expected,
        "sd2 embedded",
    );
    let empty = tok.encode("").unwrap();
    assert_eq!(&empty[..3], &[49406, 49407, 0]);
}

#[test]
fn rust_written_tokenizer_folder_loads_in_transformers() {
    let tmp = common::tmp();
    let tok = ClipTokenizer::embedded(EOS).unwrap();
    tok.save(tmp.path()).unwrap();
    let texts = corpus();
    let expected = python_ids(tmp.path(), &texts);
    assert_same(&tok, &texts, &expected, "rust-saved");
}

#[test]
fn coco_captions_tokenise_identically() {
    let Some(data) = common::shared_data() else {
        return;
    };
    let texts: Vec<String> = std::fs::read_to_string(data.join("coco_captions_10000.txt"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(texts.len(), 10000);
    let tmp = common::tmp();
    common::run_py(
        "clip_text_ref.py",
        &["tokenizer", tmp.path().to_str().unwrap(), EOS],
    );
    let expected = python_ids(tmp.path(), &texts);
    assert_same(
        &ClipTokenizer::embedded(EOS).unwrap(),
        &texts,
        &expected,
        "coco",
    );
}

/// `decode` (what an attack's searched tokens become as text) against transformers'
/// `CLIPTokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)`: on the
/// corpus's own ids and on random token rows, byte tokens that are not whole UTF-8 included.
#[test]
fn decode_matches_transformers() {
    use rand::{Rng, SeedableRng};
    let tmp = common::tmp();
    common::run_py(
        "clip_text_ref.py",
        &["tokenizer", tmp.path().to_str().unwrap(), EOS],
    );
    let tok = ClipTokenizer::embedded(EOS).unwrap();
    let mut rows: Vec<Vec<i64>> = corpus().iter().map(|t| tok.encode(t).unwrap()).collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(17);
    for len in 1..=60 {
        rows.push((0..len).map(|_| rng.random_range(0..49408)).collect());
    }
    let ids = tmp.path().join("ids.json");
    std::fs::write(&ids, serde_json::to_string(&rows).unwrap()).unwrap();
    let out = common::run_py(
        "clip_text_ref.py",
        &[
            "decode",
            tmp.path().to_str().unwrap(),
            ids.to_str().unwrap(),
        ],
    );
    let expected: Vec<String> = serde_json::from_str(&out).unwrap();
    let mut bad = 0;
    for (row, e) in rows.iter().zip(&expected) {
        let got = tok.decode(row);
        if &got != e {
            bad += 1;
            eprintln!("decode {row:?}\n rust {got:?}\n  py  {e:?}");
        }
    }
    assert_eq!(bad, 0, "{bad} of {} rows decode differently", rows.len());
    assert_eq!(
        tok.decode(&tok.encode("a phоtо of a cat").unwrap()),
        "a phоtо of a cat"
    );
}
