//! Property tests of the parsers that read outside input: whatever the bytes, an `Ok` or an error
//! naming the file, never a panic; and the round trips and invariants each parser promises.
use crate::common;

use clipdoor::diffusion::jobs::{Shard, ShardManifest};
use clipdoor::experiment::Experiment;
use clipdoor::io::prompts::read_prompts;
use clipdoor::io::weights::SafetensorsFile;
use clipdoor::text::homoglyph::{analyze, sanitize, scan, to_latin, Mode};
use clipdoor::text::tokenizer::{ClipTokenizer, BOS, EOS, MAX_LENGTH};
use proptest::prelude::*;
use std::path::Path;
use std::sync::OnceLock;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// One folder for every case of the file (each case overwrites its file).
fn dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(common::tmp).path()
}

fn tokenizer() -> &'static ClipTokenizer {
    static TOK: OnceLock<ClipTokenizer> = OnceLock::new();
    TOK.get_or_init(|| ClipTokenizer::embedded(EOS).unwrap())
}

/// An error message must name the file it is about.
fn names(err: &anyhow::Error, path: &Path) -> bool {
    format!("{err:#}").contains(path.file_name().unwrap().to_str().unwrap())
}

const EXPERIMENT: &str = r#"seed = 42
[model]
teacher = "random:tiny:0"
[data]
clean_prompts = "prompts.txt"
holdout = 1
[training]
steps = 2
clean_batch_size = 2
poisoned_samples_per_step = 1
lr_milestones = [1]
[[backdoor]]
kind = "target_prompt"
trigger = "о"
replaced_character = "o"
target_prompt = "a photo"
"#;

/// Lines, tables, keys and values an experiment file is made of (so that random files get past the
/// TOML syntax often enough to reach serde and validation).
fn toml_piece() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("\n".to_string()),
        Just("[model]\n".to_string()),
        Just("[data]\n".to_string()),
        Just("[training]\n".to_string()),
        Just("[[backdoor]]\n".to_string()),
        Just("[evaluation]\n".to_string()),
        (
            prop::sample::select(vec![
                "seed",
                "teacher",
                "clean_prompts",
                "holdout",
                "steps",
                "kind",
                "trigger",
                "replaced_character",
                "target_prompt",
                "loss",
                "lr",
                "betas",
                "precision",
                "lr_schedule",
                "judge",
                "field",
            ]),
            prop_oneof![
                any::<i64>().prop_map(|v| v.to_string()),
                any::<f64>().prop_map(|v| format!("{v:?}")),
                "\\PC{0,6}".prop_map(|s| format!("{s:?}")),
                Just("[1, 2]".to_string()),
                Just("true".to_string()),
                Just("{ a = 1 }".to_string()),
            ]
        )
            .prop_map(|(k, v)| format!("{k} = {v}\n")),
    ]
}

/// A safetensors header entry with values from small and extreme ranges.
fn tensor_entry() -> impl Strategy<Value = serde_json::Value> {
    let dim = prop_oneof![0u64..4, Just(u64::MAX), Just(1u64 << 32)];
    let dtype = prop::sample::select(vec![
        "F32", "F16", "BF16", "F64", "I64", "I32", "I16", "I8", "U8", "BOOL", "U16", "U32", "U64",
        "F8_E4M3", "F8_E5M2", "F4", "F6_E2M3", "Q7", "",
    ]);
    let offset = prop_oneof![0u64..64, Just(u64::MAX)];
    (dtype, prop::collection::vec(dim, 0..4), offset.clone(), offset).prop_map(|(d, shape, a, b)| {
        serde_json::json!({"dtype": d, "shape": shape, "data_offsets": [a, b]})
    })
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn prompt_files_of_any_bytes_read_or_fail_cleanly(
        bytes in prop::collection::vec(any::<u8>(), 0..200),
        ext in prop::sample::select(vec!["txt", "csv", "tsv", "jsonl", "txt.gz"]),
        strict in any::<bool>(),
    ) {
        let path = dir().join(format!("any.{ext}"));
        std::fs::write(&path, &bytes).unwrap();
        match read_prompts(&path, None, strict) {
            Ok(set) => prop_assert!(!set.prompts.is_empty()),
            Err(e) => prop_assert!(names(&e, &path), "{e:#}"),
        }
    }

    #[test]
    fn text_prompt_files_round_trip(lines in prop::collection::vec("[^\n\r]{1,30}", 1..12)) {
        // a prompt is its line without trailing white space; blank lines hold none
        let want: Vec<String> = lines
            .iter()
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.trim_end().to_string())
            .collect();
        prop_assume!(!want.is_empty());
        let path = dir().join("round.txt");
        std::fs::write(&path, lines.join("\n")).unwrap();
        let set = read_prompts(&path, None, true).unwrap();
        prop_assert_eq!(set.prompts, want);
        prop_assert_eq!(set.bad_lines, 0);
    }

    #[test]
    fn experiment_text_of_any_kind_parses_or_fails_cleanly(text in "\\PC{0,200}") {
        let _ = Experiment::from_toml(&text, dir());
    }

    #[test]
    fn experiment_pieces_parse_or_fail_with_the_file_named(
        pieces in prop::collection::vec(toml_piece(), 0..24),
    ) {
        let path = dir().join("pieces.toml");
        std::fs::write(&path, pieces.concat()).unwrap();
        if let Err(e) = Experiment::load(&path) {
            prop_assert!(names(&e, &path), "{e:#}");
            prop_assert!(clipdoor::error::exit_code(&e) == 2, "{e:#}");
        }
    }

    #[test]
    fn mutated_experiments_parse_or_fail_with_the_file_named(
        edits in prop::collection::vec((any::<prop::sample::Index>(), 0u8..3, any::<char>()), 1..4),
    ) {
        let mut chars: Vec<char> = EXPERIMENT.chars().collect();
        for (at, op, c) in edits {
            let i = at.index(chars.len());
            match op {
                0 => chars[i] = c,
                1 => chars.insert(i, c),
                _ => {
                    chars.remove(i);
                }
            }
        }
        let path = dir().join("mutated.toml");
        std::fs::write(&path, chars.iter().collect::<String>()).unwrap();
        if let Err(e) = Experiment::load(&path) {
            prop_assert!(names(&e, &path), "{e:#}");
            prop_assert!(clipdoor::error::exit_code(&e) == 2, "{e:#}");
        }
    }

    #[test]
    fn shard_arguments_parse_or_fail(s in "\\PC{0,12}", name in "[0-9a-z-]{0,12}") {
        if let Ok(shard) = Shard::parse(&s) {
            prop_assert!(shard.index < shard.count);
            let _ = shard.range(10);
        }
        if let Some(shard) = Shard::from_dir_name(&name) {
            let _ = shard.range(7);
        }
    }

    #[test]
    fn shard_manifests_of_any_json_read_or_fail_cleanly(
        text in prop_oneof![
            "\\PC{0,80}",
            (any::<u64>(), any::<u64>(), prop::collection::vec(any::<u64>(), 0..4), any::<u64>())
                .prop_map(|(i, n, idx, size)| serde_json::json!({
                    "stage": "images",
                    "shard": {"index": i % 4, "count": n % 4},
                    "settings_hash": "x",
                    "settings": {},
                    "sets": {"clean": {"size": size % 8, "indices": idx}},
                }).to_string()),
        ],
    ) {
        let d = dir().join("manifest");
        std::fs::create_dir_all(&d).unwrap();
        let path = d.join("shard.json");
        std::fs::write(&path, &text).unwrap();
        match ShardManifest::read(&d) {
            Ok(Some(m)) => {
                let _ = m.shard.range(5);
                let _ = m.whole();
            }
            Ok(None) => prop_assert!(false, "the manifest exists"),
            Err(e) => prop_assert!(names(&e, &path), "{e:#}"),
        }
    }

    #[test]
    fn homoglyph_sanitising_is_idempotent(text in "\\PC{0,40}", mixed in "[a-zа-яα-ω ]{0,20}") {
        for t in [&text, &mixed] {
            for mode in [Mode::Map, Mode::Strip] {
                let once = sanitize(t, mode).unwrap();
                prop_assert_eq!(&sanitize(&once, mode).unwrap(), &once, "{:?}", mode);
            }
            let latin = to_latin(t);
            prop_assert_eq!(to_latin(&latin), latin.clone());
            let _ = sanitize(t, Mode::Reject);
            let _ = analyze(t, true);
            let _ = scan(t);
        }
    }
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn safetensors_of_any_bytes_open_or_fail_naming_the_file(
        bytes in prop::collection::vec(any::<u8>(), 0..128),
        len in prop_oneof![Just(None), any::<u64>().prop_map(Some), (0u64..140).prop_map(Some)],
    ) {
        let mut file = bytes;
        if let Some(n) = len {
            let mut b = n.to_le_bytes().to_vec();
            b.extend(file);
            file = b;
        }
        let path = dir().join("any.safetensors");
        std::fs::write(&path, &file).unwrap();
        match SafetensorsFile::open(&path) {
            Ok(f) => {
                if let Err(e) = f.tensors() {
                    prop_assert!(names(&e, &path), "{e:#}");
                }
            }
            Err(e) => {
                prop_assert!(names(&e, &path), "{e:#}");
                prop_assert!(clipdoor::error::exit_code(&e) == 2, "{e:#}");
            }
        }
    }

    #[test]
    fn safetensors_headers_of_any_entries_open_or_fail_naming_the_file(
        entries in prop::collection::vec(tensor_entry(), 0..4),
        data in prop::collection::vec(any::<u8>(), 0..64),
        pad in 0usize..3,
    ) {
        let mut header = serde_json::Map::new();
        for (i, e) in entries.into_iter().enumerate() {
            header.insert(format!("t{i}"), e);
        }
        let mut h = serde_json::to_vec(&header).unwrap();
        h.extend(std::iter::repeat_n(b' ', pad));
        let mut file = (h.len() as u64).to_le_bytes().to_vec();
        file.extend(h);
        file.extend(data);
        let path = dir().join("header.safetensors");
        std::fs::write(&path, &file).unwrap();
        match SafetensorsFile::open(&path) {
            Ok(f) => {
                if let Err(e) = f.tensors() {
                    prop_assert!(names(&e, &path), "{e:#}");
                }
            }
            Err(e) => prop_assert!(names(&e, &path), "{e:#}"),
        }
    }

    #[test]
    fn the_tokenizer_takes_any_text(text in "\\PC{0,120}", raw in prop::collection::vec(any::<char>(), 0..60)) {
        let tok = tokenizer();
        let bos = tok.token_to_id(BOS).unwrap() as i64;
        let eos = tok.token_to_id(EOS).unwrap() as i64;
        for t in [text, raw.into_iter().collect::<String>()] {
            let ids = tok.encode(&t).unwrap();
            prop_assert_eq!(ids.len(), MAX_LENGTH);
            prop_assert_eq!(ids[0], bos);
            prop_assert!(ids[1..].contains(&eos), "no end token: {:?}", ids);
            let _ = tok.tokens(&t).unwrap();
            let sliced = tok.encode_batch_sliced(&[t.as_str()]).unwrap();
            prop_assert_eq!(sliced.size(), vec![1, MAX_LENGTH as i64]);
        }
    }
}
