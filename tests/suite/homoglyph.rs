//! The homoglyph toolkit: UTS #39 behaviour (skeletons, mixed scripts, restriction levels),
//! sanitising (idempotent, keeps legitimate non-Latin text), invisible characters, the CLI's exit
//! codes and JSON, and the embedding shift measured on a tiny random encoder.
use crate::common;

use clipdoor::text::homoglyph::{self as hg, AttackSpec, Count, Mode, SanitizeOptions};
use rand::{Rng, SeedableRng};
use std::path::Path;

const CYR_A: char = '\u{0430}';
const GREEK_PROMPT: &str = "Ελληνικό νησί στο ηλιοβασίλεμα";
const CYRILLIC_PROMPT: &str = "Красная площадь в Москве зимой";

fn map(s: &str) -> String {
    hg::sanitize(s, Mode::Map).unwrap()
}

fn strip(s: &str) -> String {
    hg::sanitize(s, Mode::Strip).unwrap()
}

// ---- UTS #39 ----

#[test]
fn uts39_paypal_skeletons_match() {
    let spoof = format!("p{CYR_A}yp{CYR_A}l");
    assert_eq!(hg::skeleton("paypal"), hg::skeleton(&spoof));
    assert_ne!(hg::skeleton("paypal"), hg::skeleton("paypa1x"));
    assert_eq!(hg::latin_lookalike(CYR_A).as_deref(), Some("a"));
}

#[test]
fn uts39_greek_rho_imitates_p() {
    assert_eq!(hg::skeleton("ρ"), hg::skeleton("p"));
    assert_eq!(hg::latin_lookalike('ρ').as_deref(), Some("p"));
    let of_p = hg::confusables_of('p');
    let rho = of_p
        .iter()
        .find(|l| l.glyph == 'ρ')
        .expect("ρ is a look-alike of p");
    assert_eq!(
        (rho.script, rho.family.as_str(), rho.code_point.as_str()),
        ("Greek", "greek", "U+03C1")
    );
    assert!(of_p
        .iter()
        .any(|l| l.glyph == '\u{0440}' && l.script == "Cyrillic"));
    assert!(of_p.iter().all(|l| !l.glyph.is_ascii()));
}

#[test]
fn uts39_mixed_script_circle() {
    // "Сirсlе": Cyrillic С, с, е among Latin i, r, l (the UTS #39 example).
    let spoof = "\u{0421}ir\u{0441}l\u{0435}";
    let report = hg::scan(spoof);
    assert_eq!(report.mixed_script_words.len(), 1);
    let mut scripts = report.mixed_script_words[0].scripts.clone();
    scripts.sort();
    assert_eq!(scripts, ["Cyrillic", "Latin"]);
    assert_eq!(report.restriction_level, "minimally-restrictive");
    assert_eq!(report.confusables, 3);
    assert_eq!(report.sanitized.as_deref(), Some("Circle"));
    assert!(report.suspicious);
    let clean = hg::scan("Circle");
    assert!(clean.mixed_script_words.is_empty() && !clean.suspicious && clean.sanitized.is_none());
}

#[test]
fn uts39_restriction_levels() {
    let level = |s: &str| hg::scan(s).restriction_level;
    assert_eq!(level("a photo of a cat, 4k"), "ascii-only");
    assert_eq!(level(GREEK_PROMPT), "single-script");
    assert_eq!(level("café au lait"), "single-script");
    // Latin + Han + Hiragana (Japanese) is highly restrictive.
    assert_eq!(level("Tokyo 東京 ひらがな"), "highly-restrictive");
    // Latin + one other recommended script that is not Cyrillic or Greek.
    assert_eq!(level("Cairo القاهرة"), "moderately-restrictive");
    assert_eq!(level("Moscow Москва"), "minimally-restrictive");
    // Fullwidth letters are not allowed in identifiers at all.
    assert_eq!(level("ｃａｔ"), "unrestricted");
}

#[test]
fn confusables_of_o_cover_the_papers_homoglyphs() {
    let by_family = hg::confusables_by_family('o');
    let has = |family: &str, c: char| by_family.get(family).is_some_and(|v| v.contains(&c));
    assert!(has("greek", '\u{03BF}'));
    assert!(has("cyrillic", '\u{043E}'));
    assert!(has("arabic", '\u{0647}'));
    assert!(has("hangul", '\u{3147}'));
    assert!(has("armenian", '\u{0585}'));
    assert!(has("fullwidth", '\u{FF4F}'));
    // Halfwidth Hangul sits in the fullwidth block but is Hangul, not a fullwidth Latin form.
    assert!(has("hangul", '\u{FFB7}') && !has("fullwidth", '\u{FFB7}'));
    // ọ (U+1ECD) carries a diacritic: its own skeleton, so UTS #39 does not list it.
    assert!(!by_family
        .values()
        .flatten()
        .any(|&c| c == '\u{1ECD}' || c == 'o'));
    let families = hg::known_families();
    for f in [
        "cyrillic",
        "greek",
        "armenian",
        "cherokee",
        "latin-extended",
        "fullwidth",
    ] {
        assert!(
            families.iter().any(|k| k == f),
            "{f} missing from {families:?}"
        );
    }
}

#[test]
fn latin_lookalikes_are_readable() {
    // Skeletons are keys (І and 1 both become l); the look-alike keeps case and NFKC.
    assert_eq!(hg::latin_lookalike('\u{0406}').as_deref(), Some("I"));
    assert_eq!(hg::latin_lookalike('\u{FF4D}').as_deref(), Some("m"));
    assert_eq!(hg::latin_lookalike('\u{0391}').as_deref(), Some("A"));
    assert_eq!(hg::latin_lookalike('é'), None);
    assert_eq!(hg::latin_lookalike('a'), None);
    assert_eq!(hg::latin_lookalike('\u{200B}'), None);
    assert_eq!(hg::skeleton_nfc("Ｉ"), "l");
}

// ---- sanitize ----

#[test]
fn sanitize_maps_and_strips_mixed_script_words() {
    let spoof = format!("a photo of a p{CYR_A}yp{CYR_A}l logo");
    assert_eq!(map(&spoof), "a photo of a paypal logo");
    assert_eq!(strip(&spoof), "a photo of a pypl logo");
    assert_eq!(hg::to_latin(&spoof), "a photo of a paypal logo");
    // A Latin word with a Latin-script look-alike (alpha) and a fullwidth letter.
    assert_eq!(map("ɑpple ｏn a table"), "apple on a table");
}

#[test]
fn sanitize_maps_a_disguised_word_in_a_latin_prompt() {
    // The article "a" written as Cyrillic а: a whole word, single-script, yet a disguise.
    let spoof = format!("a photo of {CYR_A} dog");
    assert_eq!(map(&spoof), "a photo of a dog");
    assert_eq!(strip(&spoof), "a photo of  dog");
    assert!(hg::scan(&spoof).suspicious);
}

#[test]
fn sanitize_keeps_whole_script_prompts() {
    for prompt in [GREEK_PROMPT, CYRILLIC_PROMPT, "Σοφία", "сос", "東京の夜景"] {
        for mode in [Mode::Map, Mode::Strip, Mode::Reject] {
            assert_eq!(
                hg::sanitize(prompt, mode).unwrap(),
                prompt,
                "{mode:?} changed {prompt}"
            );
        }
        assert!(!hg::scan(prompt).suspicious, "{prompt} reported suspicious");
    }
    // A genuine foreign word in a Latin prompt stays (η and ί have no ASCII look-alike).
    let quoted = "the Greek word νησί on a sign";
    assert_eq!(map(quoted), quoted);
    // Unless every script is asked for.
    let all = SanitizeOptions {
        mode: Mode::Map,
        all_scripts: true,
    };
    let mapped = hg::sanitize_with(GREEK_PROMPT, &all).unwrap();
    assert_ne!(mapped, GREEK_PROMPT);
    assert!(!mapped.contains('ο'), "Greek omicron left in {mapped}");
}

#[test]
fn invisible_characters_are_detected_and_removed() {
    let cases = [
        ('\u{200B}', "zero-width"),
        ('\u{200D}', "zero-width"),
        ('\u{FEFF}', "zero-width"),
        ('\u{202E}', "bidi-control"),
        ('\u{2067}', "bidi-control"),
        ('\u{E0041}', "tag"),
        ('\u{FE0F}', "variation-selector"),
        ('\u{E0100}', "variation-selector"),
        ('\u{00AD}', "other-ignorable"),
    ];
    for (c, kind) in cases {
        assert_eq!(hg::invisible_kind(c), Some(kind), "U+{:04X}", c as u32);
        let text = format!("a c{c}at");
        let report = hg::scan(&text);
        assert_eq!(report.invisible, 1);
        assert_eq!(report.chars[3].invisible, Some(kind));
        assert!(report.suspicious);
        assert_eq!(map(&text), "a cat");
        assert_eq!(strip(&text), "a cat");
        // Removed even inside a Greek prompt.
        assert_eq!(map(&format!("Σο{c}φία")), "Σοφία");
    }
    for visible in ['a', ' ', '\u{00A0}', 'é', 'ж'] {
        assert_eq!(hg::invisible_kind(visible), None);
    }
}

#[test]
fn scan_reports_nfkc_differences() {
    let report = hg::scan("ﬁne ｃat");
    assert_eq!(report.nfkc.as_deref(), Some("fine cat"));
    let ligature = &report.chars[0];
    assert_eq!(
        (ligature.code_point.as_str(), ligature.nfkc.as_deref()),
        ("U+FB01", Some("fi"))
    );
    assert!(hg::scan("a cat").nfkc.is_none());
}

#[test]
fn reject_names_character_code_point_and_position() {
    let spoof = format!("p{CYR_A}ypal");
    let err = hg::sanitize(&spoof, Mode::Reject).unwrap_err();
    let msg = format!("{err:#}");
    assert_eq!(clipdoor::error::exit_code(&err), 2);
    assert!(
        msg.contains("U+0430") && msg.contains("position 2") && msg.contains("Cyrillic"),
        "{msg}"
    );
    let err = hg::sanitize("a\u{200B}b", Mode::Reject).unwrap_err();
    assert!(format!("{err:#}").contains("U+200B"), "{err:#}");
    assert_eq!(
        hg::sanitize("a plain prompt", Mode::Reject).unwrap(),
        "a plain prompt"
    );
}

/// Random prompts from an alphabet of ASCII, look-alikes of several scripts, genuine foreign
/// letters, invisible characters and combining marks.
fn random_prompts(n: usize, seed: u64) -> Vec<String> {
    let alphabet: Vec<char> = "aopcexyiIlm1O0 .,-ароскеуіхΑορνηαικστλΣжшщ漢ひｏｍ𝐨ɑọéهㅇՕᎪ"
        .chars()
        .chain([
            '\u{200B}',
            '\u{202E}',
            '\u{FE0F}',
            '\u{0301}',
            '\u{E0041}',
            '\u{00AD}',
        ])
        .collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let len = rng.random_range(0..24);
            (0..len)
                .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                .collect()
        })
        .collect()
}

#[test]
fn sanitize_is_idempotent_on_generated_prompts() {
    let mut changed = 0;
    for text in random_prompts(1000, 7) {
        for all_scripts in [false, true] {
            for mode in [Mode::Map, Mode::Strip] {
                let opts = SanitizeOptions { mode, all_scripts };
                let once = hg::sanitize_with(&text, &opts).unwrap();
                let twice = hg::sanitize_with(&once, &opts).unwrap();
                assert_eq!(
                    once, twice,
                    "{mode:?} all_scripts={all_scripts} on {text:?}"
                );
                assert!(
                    hg::analyze(&once, all_scripts).is_empty(),
                    "flags left in {once:?}"
                );
                assert!(
                    !once.chars().any(hg::is_invisible),
                    "invisible left in {once:?}"
                );
                let reject = SanitizeOptions {
                    mode: Mode::Reject,
                    all_scripts,
                };
                assert_eq!(hg::sanitize_with(&once, &reject).unwrap(), once);
                changed += usize::from(once != text);
            }
        }
    }
    // The generator must actually exercise the rewriting.
    assert!(changed > 1500, "only {changed} rewrites");
}

// ---- attack ----

#[test]
fn attack_variants_replace_first_or_all_occurrences() {
    let spec = AttackSpec {
        families: vec!["greek".into(), "cyrillic".into()],
        targets: vec!['o'],
        glyphs: vec![],
        count: Count::First(1),
    };
    let variants = hg::attack_variants("a photo of a dog", &spec);
    let texts: Vec<&str> = variants.iter().map(|v| v.text.as_str()).collect();
    assert!(texts.contains(&"a phοto of a dog"), "{texts:?}"); // Greek omicron, first o only
    assert!(texts.contains(&"a phоto of a dog"), "{texts:?}"); // Cyrillic o
    assert!(variants.iter().all(|v| v.replaced == 1
        && v.latin == 'o'
        && ["greek", "cyrillic"].contains(&v.family.as_str())));
    let all = AttackSpec {
        count: Count::All,
        ..spec.clone()
    };
    let v = hg::attack_variants("a photo of a dog", &all);
    assert!(v.iter().all(|v| v.replaced == 4 && !v.text.contains('o')));
    // Explicit glyphs (the paper's ọ) and prompts without the character.
    let explicit = AttackSpec {
        glyphs: vec!['\u{1ECD}'],
        ..spec
    };
    assert_eq!(hg::attack_variants("a photo", &explicit)[0].text, "a phọto");
    assert!(hg::attack_variants("a cat", &explicit).is_empty());
    // Attacks undone by the sanitiser.
    for v in hg::attack_variants("a photo of a dog", &AttackSpec::default()) {
        assert_eq!(
            map(&v.text),
            "a photo of a dog",
            "{} {}",
            v.code_point,
            v.text
        );
    }
    assert!("0".parse::<Count>().is_err() && "x".parse::<Count>().is_err());
    assert_eq!("all".parse::<Count>().unwrap(), Count::All);
}

fn tiny_encoder(dir: &Path) -> clipdoor::models::text_encoder::TextEncoder {
    use clipdoor::models::{clip_text_config::CLIPTextConfig, text_encoder::TextEncoder};
    let cfg = CLIPTextConfig::preset("tiny").unwrap();
    let tok = clipdoor::text::tokenizer::ClipTokenizer::embedded("<|endoftext|>").unwrap();
    let enc = TextEncoder::random(cfg, tok, false, 3, tch::Device::Cpu).unwrap();
    enc.save(dir, None).unwrap();
    enc.tokenizer.save(dir).unwrap();
    enc
}

#[test]
fn embedding_shift_on_tiny_encoder() {
    let tmp = common::tmp();
    let enc = tiny_encoder(tmp.path());
    let clean = "a photo of a dog".to_string();
    let pairs: Vec<(String, String)> = vec![
        (clean.clone(), "a phοto of a dog".into()),
        (clean.clone(), "a phоto of a dog".into()),
        (clean.clone(), clean.clone()),
        ("A Photo".into(), "a photo".into()), // the tokenizer lowercases: same ids
    ];
    let shifts = clipdoor::scan::shift::embedding_shift(&enc, &pairs, 2, &|_| {}).unwrap();
    for s in &shifts[..2] {
        assert!(s.sim_hidden.is_finite() && s.sim_pooled.is_finite());
        assert!(s.sim_hidden < 1.0 && s.sim_pooled < 1.0, "{s:?}");
        assert!(s.sim_hidden > -1.0);
    }
    assert_ne!(shifts[0], shifts[1]);
    assert_eq!(
        shifts[2],
        clipdoor::scan::shift::Shift {
            sim_hidden: 1.0,
            sim_pooled: 1.0
        }
    );
    assert_eq!(
        shifts[3],
        clipdoor::scan::shift::Shift {
            sim_hidden: 1.0,
            sim_pooled: 1.0
        }
    );
}

// ---- command line ----

fn run(args: &[&str]) -> std::process::Output {
    common::bin().arg("homoglyph").args(args).output().unwrap()
}

#[test]
fn cli_reject_exits_2_naming_the_character() {
    let spoof = format!("p{CYR_A}ypal");
    let out = run(&["sanitize", "--mode", "reject", &spoof]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("U+0430") && err.contains("position 2"),
        "{err}"
    );
    let out = run(&["sanitize", "--mode", "reject", "a plain prompt"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "a plain prompt\n");
    // Usage errors are exit code 2 too.
    assert_eq!(
        run(&["sanitize", "--mode", "bogus", "x"]).status.code(),
        Some(2)
    );
    assert_eq!(run(&["scan"]).status.code(), Some(2));
}

#[test]
fn cli_reject_on_a_file_names_the_prompt() {
    let tmp = common::tmp();
    let file = tmp.path().join("prompts.txt");
    std::fs::write(
        &file,
        format!("a clean one\nsecond {CYR_A}pple\nthird {CYR_A}pple\n"),
    )
    .unwrap();
    let out = run(&[
        "sanitize",
        "--mode",
        "reject",
        "--prompts",
        file.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("prompt 2 of") && err.contains("1 more"),
        "{err}"
    );
}

#[test]
fn cli_sanitize_file_to_out() {
    let tmp = common::tmp();
    let file = tmp.path().join("prompts.txt");
    std::fs::write(
        &file,
        format!("p{CYR_A}yp{CYR_A}l\n{GREEK_PROMPT}\nzero\u{200B}width\n"),
    )
    .unwrap();
    let out_file = tmp.path().join("clean.txt");
    let args = [
        "sanitize",
        "--prompts",
        file.to_str().unwrap(),
        "--out",
        out_file.to_str().unwrap(),
    ];
    let out = run(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        out_file.to_str().unwrap()
    );
    let written = std::fs::read_to_string(&out_file).unwrap();
    assert_eq!(written, format!("paypal\n{GREEK_PROMPT}\nzerowidth\n"));
    // An existing output is kept without --force.
    assert_eq!(run(&args).status.code(), Some(2));
    let mut forced = args.to_vec();
    forced.push("--force");
    assert!(run(&forced).status.success());
}

#[test]
fn cli_scan_json_shape() {
    let spoof = format!("p{CYR_A}ypal\u{200B} login");
    let out = run(&["scan", "--json", &spoof]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["prompts"], 1);
    assert_eq!(doc["suspicious"], 1);
    let report = &doc["reports"][0];
    assert_eq!(report["restriction_level"], "minimally-restrictive");
    assert_eq!(
        report["mixed_script_words"][0]["word"],
        format!("p{CYR_A}ypal\u{200B}")
    );
    assert_eq!(report["sanitized"], "paypal login");
    let chars = report["chars"].as_array().unwrap();
    assert_eq!(chars.len(), spoof.chars().count());
    let a = &chars[1];
    assert_eq!(a["code_point"], "U+0430");
    assert_eq!(a["script"], "Cyrillic");
    assert_eq!(a["confusable"], true);
    assert_eq!(a["latin_lookalike"], "a");
    assert_eq!(a["flagged"], "mixed-script-word");
    assert_eq!(chars[6]["invisible"], "zero-width");
    assert_eq!(chars[0]["confusable"], false);
    assert!(chars[0]["latin_lookalike"].is_null());
    // Human output names the character too.
    let human = run(&["scan", &spoof]);
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.contains("SUSPICIOUS") && text.contains("U+0430") && text.contains("U+200B"),
        "{text}"
    );
}

#[test]
fn cli_attack_lists_variants_and_rejects_unknown_scripts() {
    let out = run(&[
        "attack",
        "a photo of a dog",
        "--char",
        "o",
        "--scripts",
        "greek",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect();
    assert!(lines.contains(&"a phοto of a dog".to_string()), "{lines:?}");
    assert!(lines
        .iter()
        .all(|l| l.chars().filter(|c| *c == 'o').count() == 3));
    let json = run(&[
        "attack",
        "a photo",
        "--char",
        "o",
        "--scripts",
        "greek,cyrillic",
        "--json",
    ]);
    let doc: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let results = doc["results"].as_array().unwrap();
    assert_eq!(doc["variants"].as_u64(), Some(results.len() as u64));
    assert!(
        doc.get("homoglyphs").is_none(),
        "no ranking without --model"
    );
    let omicron = results
        .iter()
        .find(|r| r["code_point"] == "U+03BF")
        .expect("Greek omicron variant");
    assert_eq!(
        (omicron["text"].as_str(), omicron["replaced"].as_u64()),
        (Some("a phοto"), Some(1))
    );
    assert!(results
        .iter()
        .all(|r| r["prompt"] == 1 && r["sim_hidden"].is_null()));
    let bad = run(&["attack", "a dog", "--scripts", "klingon"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("klingon"));
    assert_eq!(
        run(&["attack", "a dog", "--char", "oo"]).status.code(),
        Some(2)
    );
    assert_eq!(
        run(&["attack", "xyz", "--char", "q"]).status.code(),
        Some(2)
    );
}

#[test]
fn cli_attack_ranks_homoglyphs_on_tiny_encoder() {
    let tmp = common::tmp();
    let model = tmp.path().join("enc");
    tiny_encoder(&model);
    let prompts = tmp.path().join("p.txt");
    std::fs::write(&prompts, "a photo of a dog\na portrait of an old man\n").unwrap();
    let report = tmp.path().join("attack.json");
    let out = run(&[
        "attack",
        "--prompts",
        prompts.to_str().unwrap(),
        "--char",
        "o,a",
        "--scripts",
        "greek,cyrillic,fullwidth",
        "--model",
        model.to_str().unwrap(),
        "--device",
        "cpu",
        "--out",
        report.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let ranked = doc["homoglyphs"].as_array().unwrap();
    assert!(ranked.len() >= 6, "{ranked:?}");
    let sims: Vec<f64> = ranked
        .iter()
        .map(|h| h["sim_hidden"].as_f64().unwrap())
        .collect();
    assert!(
        sims.windows(2).all(|w| w[0] <= w[1]),
        "not ranked: {sims:?}"
    );
    for h in ranked {
        let (hid, pool) = (
            h["sim_hidden"].as_f64().unwrap(),
            h["sim_pooled"].as_f64().unwrap(),
        );
        assert!(
            hid.is_finite() && hid < 1.0 && pool.is_finite() && pool < 1.0,
            "{h}"
        );
        assert_eq!(h["prompts"], 2);
    }
    let omicron = ranked
        .iter()
        .find(|h| h["glyph"] == "ο")
        .expect("Greek omicron ranked");
    assert_eq!(
        (omicron["latin"].as_str(), omicron["family"].as_str()),
        (Some("o"), Some("greek"))
    );
    assert_eq!(
        doc["results"].as_array().unwrap().len(),
        doc["variants"].as_u64().unwrap() as usize
    );
}
