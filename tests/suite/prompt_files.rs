//! Prompt files: text, CSV, TSV, JSONL, gzipped or not; bad lines counted, not fatal (unless strict).
use crate::common;

use clipdoor::io::prompts::read_prompts;
use std::io::Write;

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

#[test]
fn every_format_reads_the_same_prompts() {
    let t = common::tmp();
    let want = vec!["a red car", "a dog, on a \"beach\"", "東京 at night"];
    let files: Vec<(&str, Vec<u8>, Option<&str>)> = vec![
        ("p.txt", "a red car\n\na dog, on a \"beach\"\r\n東京 at night\n".into(), None),
        ("p.csv", "id,TEXT\n1,a red car\n2,\"a dog, on a \"\"beach\"\"\"\n3,東京 at night\n".into(), Some("TEXT")),
        ("p.tsv", "caption\tscore\na red car\t1\na dog, on a \"beach\"\t2\n東京 at night\t3\n".into(), None),
        ("p.jsonl", "{\"prompt\": \"a red car\"}\n{\"prompt\": \"a dog, on a \\\"beach\\\"\"}\n{\"prompt\": \"東京 at night\"}\n".into(), None),
    ];
    for (name, bytes, field) in files {
        for zipped in [false, true] {
            let path = t.path().join(if zipped {
                format!("{name}.gz")
            } else {
                name.to_string()
            });
            std::fs::write(&path, if zipped { gz(&bytes) } else { bytes.clone() }).unwrap();
            let set = read_prompts(&path, field, true).unwrap_or_else(|e| panic!("{name}: {e:#}"));
            assert_eq!(set.prompts, want, "{}", path.display());
            assert_eq!(set.bad_lines, 0);
        }
    }
}

#[test]
fn bad_lines_are_counted_or_fatal_in_strict_mode() {
    let t = common::tmp();
    let p = t.path().join("p.jsonl");
    std::fs::write(&p, b"{\"TEXT\": \"ok one\"}\nnot json\n{\"other\": 1}\n{\"TEXT\": \"bad \xff utf8\"}\n{\"TEXT\": \"ok two\"}\n").unwrap();
    let set = read_prompts(&p, Some("TEXT"), false).unwrap();
    assert_eq!(set.prompts, vec!["ok one", "ok two"]);
    assert_eq!(set.bad_lines, 3);
    let err = format!("{:#}", read_prompts(&p, Some("TEXT"), true).unwrap_err());
    assert!(err.contains("line 2"), "{err}");
    // a CSV without the named column names the columns it has
    let c = t.path().join("p.csv");
    std::fs::write(&c, "a,b\n1,2\n").unwrap();
    let err = format!("{:#}", read_prompts(&c, Some("TEXT"), false).unwrap_err());
    assert!(
        err.contains("no column `TEXT`") && err.contains("a, b"),
        "{err}"
    );
    // not gzip
    let g = t.path().join("p.txt.gz");
    std::fs::write(&g, "plain").unwrap();
    assert!(format!("{:#}", read_prompts(&g, None, false).unwrap_err()).contains("not valid gzip"));
}

/// Where outputs map to inputs every line is a prompt: a blank line is the empty prompt (in text, an
/// empty CSV cell or JSON field too), so `encode`'s rows match the file's lines and the unconditional
/// embedding can be encoded from a file. Training pools skip blank lines and count them.
#[test]
fn every_line_is_a_prompt_where_outputs_map_to_inputs() {
    use clipdoor::io::prompts::read_prompt_lines;
    let t = common::tmp();
    let p = t.path().join("p.txt");
    std::fs::write(&p, "a red car\n\n  \nlast").unwrap();
    let lines = read_prompt_lines(&p, None, true).unwrap();
    assert_eq!(lines.prompts, vec!["a red car", "", "", "last"]);
    let pool = read_prompts(&p, None, true).unwrap();
    assert_eq!(pool.prompts, vec!["a red car", "last"]);
    assert_eq!(pool.blank_lines, 2);
    // The newline that ends the last line does not start another; a file of one blank line is one
    // empty prompt; an empty file holds none.
    std::fs::write(&p, "a\n\n").unwrap();
    assert_eq!(
        read_prompt_lines(&p, None, true).unwrap().prompts,
        vec!["a", ""]
    );
    std::fs::write(&p, "\n").unwrap();
    assert_eq!(read_prompt_lines(&p, None, true).unwrap().prompts, vec![""]);
    std::fs::write(&p, "").unwrap();
    assert!(read_prompt_lines(&p, None, true).is_err());
    let c = t.path().join("p.csv");
    std::fs::write(&c, "prompt,n\nx,1\n,2\ny,3\n").unwrap();
    assert_eq!(
        read_prompt_lines(&c, None, true).unwrap().prompts,
        vec!["x", "", "y"]
    );
    assert_eq!(read_prompts(&c, None, true).unwrap().blank_lines, 1);

    // `clipdoor encode`: one row per line, and the blank line's row is the empty prompt's.
    let out = t.path().join("e.safetensors");
    std::fs::write(&p, "a photo of a cat\n\na dog\n").unwrap();
    let o = common::encode_cmd("random:tiny:0", &p, &out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rows = common::load_st(&out)["last_hidden_state"].shallow_clone();
    assert_eq!(rows.size()[0], 3);
    let empty = t.path().join("empty.txt");
    std::fs::write(&empty, "\n").unwrap();
    let out1 = t.path().join("u.safetensors");
    let o = common::encode_cmd("random:tiny:0", &empty, &out1)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let uncond = common::load_st(&out1)["last_hidden_state"].shallow_clone();
    assert_eq!(common::max_abs(&rows.get(1), &uncond.get(0)), 0.0);
    assert!(common::max_abs(&rows.get(0), &uncond.get(0)) > 0.0);
}
