//! Prompt files: plain text (one prompt a line), CSV/TSV (a named column), JSONL (a named field),
//! each optionally gzipped (`.gz`). Two readings (../shared/conventions.md): where outputs map to inputs
//! (`encode`, `generate`, evaluation sets) every line is a prompt and a blank line is the empty prompt
//! ([`read_prompt_lines`]), so output rows match input lines; training pools skip blank lines and count
//! them ([`read_prompts`]). Unreadable lines (invalid UTF-8, a JSON line without the field) are counted,
//! and are fatal only in strict mode.
use anyhow::Context;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::{input_bail, input_err};

#[derive(Debug, Clone)]
pub struct PromptSet {
    pub path: PathBuf,
    pub prompts: Vec<String>,
    /// Lines that could not be read as a prompt (reported, skipped).
    pub bad_lines: usize,
    /// Blank lines (or empty fields) skipped by [`read_prompts`]; 0 for [`read_prompt_lines`], which
    /// keeps them as empty prompts.
    pub blank_lines: usize,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Format {
    Text,
    Csv(u8),
    Jsonl,
}

fn format_of(path: &Path) -> (Format, bool) {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let gz = name.ends_with(".gz");
    let stem = name.trim_end_matches(".gz");
    let f = if stem.ends_with(".csv") {
        Format::Csv(b',')
    } else if stem.ends_with(".tsv") {
        Format::Csv(b'\t')
    } else if stem.ends_with(".jsonl") || stem.ends_with(".ndjson") {
        Format::Jsonl
    } else {
        Format::Text
    };
    (f, gz)
}

/// Read prompts, skipping blank lines (training pools). `field`: the CSV/TSV column or JSONL field
/// (default `prompt`, then `TEXT`, `caption`, `text`). `strict`: the first bad line is an input error
/// naming the line.
pub fn read_prompts(path: &Path, field: Option<&str>, strict: bool) -> Result<PromptSet> {
    read(path, field, strict, false)
}

/// Read prompts where every line is one: a blank line (an empty CSV cell or JSON field) is the empty
/// prompt, so the i-th prompt is the i-th line (row, record) of the file. The end of the file after
/// its last newline is not a line. JSONL lines that are entirely blank are not records and are skipped.
pub fn read_prompt_lines(path: &Path, field: Option<&str>, strict: bool) -> Result<PromptSet> {
    read(path, field, strict, true)
}

fn read(path: &Path, field: Option<&str>, strict: bool, keep_blank: bool) -> Result<PromptSet> {
    let raw = std::fs::read(path).map_err(|e| {
        input_err!("cannot read prompt file {}: {e}. Give a text file with one prompt per line (or .csv/.tsv/.jsonl, optionally .gz)", path.display())
    })?;
    let (format, gz) = format_of(path);
    let bytes = if gz {
        let mut out = vec![];
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| input_err!("{} is not valid gzip ({e})", path.display()))?;
        out
    } else {
        raw
    };
    let mut set = PromptSet {
        path: path.to_owned(),
        prompts: vec![],
        bad_lines: 0,
        blank_lines: 0,
    };
    let bad = |set: &mut PromptSet, line: usize, why: &str| -> Result<()> {
        if strict {
            input_bail!(
                "{} line {line}: {why}. Fix or remove the line.",
                path.display()
            );
        }
        set.bad_lines += 1;
        Ok(())
    };
    match format {
        Format::Text | Format::Jsonl => {
            // The text after the last newline is a line only when it is not empty.
            let body = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
            let lines: Vec<&[u8]> = if body.is_empty() && bytes.len() <= 1 {
                if bytes.is_empty() {
                    vec![]
                } else {
                    vec![&b""[..]]
                }
            } else {
                body.split(|&b| b == b'\n').collect()
            };
            for (i, line) in lines.into_iter().enumerate() {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                let Ok(text) = std::str::from_utf8(line) else {
                    bad(&mut set, i + 1, "invalid UTF-8")?;
                    continue;
                };
                if text.trim().is_empty() {
                    if keep_blank && format == Format::Text {
                        set.prompts.push(String::new());
                    } else if format == Format::Text {
                        set.blank_lines += 1;
                    }
                    continue;
                }
                if format == Format::Text {
                    set.prompts.push(text.trim_end().to_string());
                    continue;
                }
                let v: serde_json::Value = match serde_json::from_str(text) {
                    Ok(v) => v,
                    Err(_) => {
                        bad(&mut set, i + 1, "not a JSON object")?;
                        continue;
                    }
                };
                match pick_field(&v, field) {
                    Some(s) if !s.trim().is_empty() => set.prompts.push(s.to_string()),
                    Some(_) if keep_blank => set.prompts.push(String::new()),
                    Some(_) => set.blank_lines += 1,
                    _ => bad(
                        &mut set,
                        i + 1,
                        &format!("no string field `{}`", field.unwrap_or("prompt")),
                    )?,
                }
            }
        }
        Format::Csv(delim) => {
            let mut rdr = csv::ReaderBuilder::new()
                .delimiter(delim)
                .flexible(true)
                .from_reader(&bytes[..]);
            let headers = rdr
                .byte_headers()
                .with_context(|| format!("reading the header of {}", path.display()))?
                .clone();
            let names: Vec<String> = headers
                .iter()
                .map(|h| String::from_utf8_lossy(h).trim().to_string())
                .collect();
            let col = match field {
                Some(f) => names.iter().position(|n| n == f),
                None => ["prompt", "TEXT", "caption", "text"]
                    .iter()
                    .find_map(|f| names.iter().position(|n| n == f)),
            }
            .ok_or_else(|| {
                input_err!(
                    "{} has no column `{}` (columns: {}): name the column to read",
                    path.display(),
                    field.unwrap_or("prompt"),
                    names.join(", ")
                )
            })?;
            for (i, rec) in rdr.byte_records().enumerate() {
                let line = i + 2;
                let Ok(rec) = rec else {
                    bad(&mut set, line, "malformed CSV record")?;
                    continue;
                };
                match rec.get(col).map(std::str::from_utf8) {
                    Some(Ok(s)) if !s.trim().is_empty() => set.prompts.push(s.trim().to_string()),
                    Some(Ok(_)) if keep_blank => set.prompts.push(String::new()),
                    Some(Ok(_)) => set.blank_lines += 1,
                    Some(Err(_)) => bad(&mut set, line, "invalid UTF-8")?,
                    None => bad(&mut set, line, "missing column")?,
                }
            }
        }
    }
    if set.prompts.is_empty() {
        input_bail!(
            "{} holds no prompts ({} unreadable, {} blank lines): give at least one non-empty prompt",
            path.display(),
            set.bad_lines,
            set.blank_lines
        );
    }
    Ok(set)
}

fn pick_field<'a>(v: &'a serde_json::Value, field: Option<&str>) -> Option<&'a str> {
    match field {
        Some(f) => v.get(f)?.as_str(),
        None => ["prompt", "TEXT", "caption", "text"]
            .iter()
            .find_map(|f| v.get(*f)?.as_str()),
    }
}
