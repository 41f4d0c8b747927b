//! Exporting a complete diffusers pipeline with a swapped-in text encoder: `clipdoor export
//! --pipeline BASE --text-encoder DIR --out OUT` and `clipdoor train ... --save-pipeline BASE`.
//!
//! The output is a folder in the `StableDiffusionPipeline.save_pretrained` layout that
//! `StableDiffusionPipeline.from_pretrained(OUT)` loads: `model_index.json` and every component of the
//! base (`unet/`, `vae/`, `scheduler/`, ...) as the base has them, hard-linked when the base is on the
//! same file system (else copied; [`ExportOptions::copy`] forces copies), and the trained encoder in
//! `text_encoder/` with its tokenizer in `tokenizer/` (the base's tokenizer when the encoder brings
//! none). Files of a hub snapshot are symlinks into the cache's blobs: they are resolved first, so the
//! output never holds a link that could dangle when the cache is cleaned.
//!
//! The compatibility of the parts is checked before anything is written (the encoder as wide as the
//! UNet's cross-attention). The folder is built in a temp sibling of `out` and renamed into place, so
//! a crash never leaves a half-written pipeline at `out`; a finished output is replaced only with
//! [`ExportOptions::force`].
use anyhow::Context;
use std::path::{Path, PathBuf};

use super::load::{pipeline_parts, resolve_pipeline_root};
use crate::error::Result;
use crate::{input_bail, input_err};

/// What is written. Only [`ExportFormat::Diffusers`] exists today; the single-file (original LDM
/// `.safetensors` checkpoint) writer is wired in here: [`ExportFormat::for_out`] already tells an
/// output path ending in `.safetensors`/`.ckpt` apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// A diffusers `save_pretrained` folder.
    Diffusers,
    /// One original-layout (LDM) `.safetensors` checkpoint: a copy of a single-file base with the
    /// trained encoder inside.
    SingleFile,
}

impl ExportFormat {
    /// The format an output path asks for: a `.safetensors` or `.ckpt` file is a single file,
    /// anything else a pipeline folder.
    pub fn for_out(out: &Path) -> Self {
        match out.extension().and_then(|e| e.to_str()) {
            Some("safetensors") | Some("ckpt") => Self::SingleFile,
            _ => Self::Diffusers,
        }
    }
}

/// How [`export_pipeline`] writes.
#[derive(Debug, Clone, Default)]
pub struct ExportOptions {
    /// Copy the base's files even where a hard link is possible.
    pub copy: bool,
    /// Replace a finished output (never done silently).
    pub force: bool,
    /// The output format (`None`: from the output path, [`ExportFormat::for_out`]).
    pub format: Option<ExportFormat>,
}

/// Components of a pipeline that may be declared in `model_index.json` but left out of a download
/// (the safety checker and its feature extractor): declared but absent in the base, they are written
/// as `[null, null]` so that diffusers loads the pipeline without them.
const OPTIONAL: [&str; 3] = ["safety_checker", "feature_extractor", "image_encoder"];

/// Files of a text-encoder folder that make up the model (the tokenizer files beside them are not).
fn is_encoder_file(name: &str) -> bool {
    name == "config.json"
        || name == "generation_config.json"
        || name == "model.safetensors"
        || name == "model.safetensors.index.json"
        || (name.starts_with("model-") && name.ends_with(".safetensors"))
}

/// Files of a tokenizer folder.
fn is_tokenizer_file(name: &str) -> bool {
    matches!(
        name,
        "vocab.json"
            | "merges.txt"
            | "tokenizer.json"
            | "tokenizer_config.json"
            | "special_tokens_map.json"
            | "added_tokens.json"
    )
}

/// What [`plan_export`] found: the files to put where, checked.
#[derive(Debug, Clone)]
pub struct ExportPlan {
    /// The base pipeline's folder (resolved from a hub id when needed).
    pub base_root: PathBuf,
    /// `(source, path inside the output)` of every file, sources with symlinks resolved.
    pub files: Vec<(PathBuf, PathBuf)>,
    /// The output's `model_index.json`.
    pub model_index: serde_json::Value,
    /// Components declared by the base but absent from it, written as `[null, null]`.
    pub dropped: Vec<String>,
}

fn canonical(p: &Path) -> Result<PathBuf> {
    std::fs::canonicalize(p).with_context(|| format!("resolving {}", p.display()))
}

/// The files under `dir` (recursively), as paths relative to `dir`, that `keep` accepts (by file
/// name), sorted. Hidden entries (`.tmp-*`, `.cache`, ...) are skipped.
fn files_under(dir: &Path, keep: &dyn Fn(&str) -> bool) -> Result<Vec<PathBuf>> {
    fn walk(
        root: &Path,
        rel: &Path,
        keep: &dyn Fn(&str) -> bool,
        out: &mut Vec<PathBuf>,
    ) -> Result<()> {
        let here = root.join(rel);
        for e in std::fs::read_dir(&here).with_context(|| format!("reading {}", here.display()))? {
            let e = e.with_context(|| format!("reading {}", here.display()))?;
            let name = e.file_name().to_string_lossy().to_string();
            if name.starts_with('.') {
                continue;
            }
            let path = e.path();
            // Follows symlinks: a hub snapshot's files are links to blobs.
            if path.is_dir() {
                walk(root, &rel.join(&name), keep, out)?;
            } else if path.is_file() && keep(&name) {
                out.push(rel.join(&name));
            }
        }
        Ok(())
    }
    let mut out = vec![];
    walk(dir, Path::new(""), keep, &mut out)?;
    out.sort();
    Ok(out)
}

/// Check the parts and list what goes where, without writing anything. `base` is a pipeline folder
/// or a cached hub id; `encoder_dir` a clipdoor run folder, its `text_encoder/`, or any CLIP
/// text-encoder folder.
pub fn plan_export(base: &str, encoder_dir: &Path) -> Result<ExportPlan> {
    let base_root = resolve_pipeline_root(base)?;
    let parts = pipeline_parts(&base_root, Some(encoder_dir))?;
    super::check_compatible(&parts).map_err(|e| {
        e.context(format!(
            "exporting {} with the text encoder {}",
            base,
            encoder_dir.display()
        ))
    })?;
    let index_path = base_root.join("model_index.json");
    let text = std::fs::read_to_string(&index_path)
        .map_err(|e| input_err!("cannot read {} ({e})", index_path.display()))?;
    let mut model_index: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        input_err!(
            "{} is not valid JSON ({e}): re-save the pipeline with StableDiffusionPipeline.save_pretrained",
            index_path.display()
        )
    })?;
    let Some(index) = model_index.as_object_mut() else {
        input_bail!(
            "{} is not a JSON object: re-save the pipeline with StableDiffusionPipeline.save_pretrained",
            index_path.display()
        );
    };
    let mut files = vec![];
    let mut dropped = vec![];
    for (name, value) in index.iter_mut() {
        if name.starts_with('_') || name == "text_encoder" || name == "tokenizer" {
            continue;
        }
        let declared = match value {
            serde_json::Value::Array(a) => !a.iter().all(serde_json::Value::is_null),
            serde_json::Value::Null => false,
            // requires_safety_checker and other plain settings.
            _ => continue,
        };
        if !declared {
            continue;
        }
        let dir = base_root.join(name);
        if !dir.is_dir() {
            if OPTIONAL.contains(&name.as_str()) {
                *value = serde_json::json!([null, null]);
                dropped.push(name.clone());
                continue;
            }
            input_bail!(
                "{} declares the component `{name}` but {} has no {name}/ folder: download the whole pipeline (huggingface-cli download), or point --pipeline at a complete save_pretrained folder",
                index_path.display(),
                base_root.display()
            );
        }
        for rel in files_under(&dir, &|_| true)? {
            files.push((canonical(&dir.join(&rel))?, Path::new(name).join(rel)));
        }
    }
    if !index.contains_key("text_encoder") || !index.contains_key("tokenizer") {
        input_bail!(
            "{} declares no text_encoder/tokenizer component: only pipelines with a CLIP text encoder (StableDiffusionPipeline) can take a trained encoder",
            index_path.display()
        );
    }
    let enc = &parts.encoder.encoder_dir;
    let enc_files = files_under(enc, &|n| is_encoder_file(n))?;
    let enc_files: Vec<PathBuf> = enc_files
        .into_iter()
        .filter(|p| p.components().count() == 1)
        .collect();
    if !enc_files
        .iter()
        .any(|p| p.to_str().is_some_and(|s| s.ends_with(".safetensors")))
    {
        input_bail!(
            "the text encoder {} has no model.safetensors: give the folder `clipdoor train` wrote (or re-save the encoder with save_pretrained(safe_serialization=True))",
            enc.display()
        );
    }
    for rel in enc_files {
        files.push((
            canonical(&enc.join(&rel))?,
            Path::new("text_encoder").join(rel),
        ));
    }
    let tok = parts
        .encoder
        .tokenizer_dir
        .clone()
        .unwrap_or_else(|| base_root.join("tokenizer"));
    let tok_files: Vec<PathBuf> = files_under(&tok, &|n| is_tokenizer_file(n))?
        .into_iter()
        .filter(|p| p.components().count() == 1)
        .collect();
    if tok_files.is_empty() {
        input_bail!(
            "{} holds no tokenizer files (vocab.json + merges.txt, or tokenizer.json): add the encoder's tokenizer/ beside its text_encoder/",
            tok.display()
        );
    }
    for rel in tok_files {
        files.push((
            canonical(&tok.join(&rel))?,
            Path::new("tokenizer").join(rel),
        ));
    }
    Ok(ExportPlan {
        base_root,
        files,
        model_index,
        dropped,
    })
}

/// Put `src` at `dst`: a hard link unless `copy` (or linking fails, e.g. across file systems).
fn place(src: &Path, dst: &Path, copy: bool) -> Result<()> {
    if let Some(dir) = dst.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if copy || std::fs::hard_link(src, dst).is_err() {
        std::fs::copy(src, dst)
            .with_context(|| format!("copying {} to {}", src.display(), dst.display()))?;
    }
    Ok(())
}

fn remove_any(p: &Path) -> Result<()> {
    let meta = match std::fs::symlink_metadata(p) {
        Ok(m) => m,
        Err(_) => return Ok(()),
    };
    if meta.is_dir() {
        std::fs::remove_dir_all(p).with_context(|| format!("removing {}", p.display()))
    } else {
        std::fs::remove_file(p).with_context(|| format!("removing {}", p.display()))
    }
}

/// Whether `path` is a finished output: a file, or a folder with anything in it.
fn holds_output(path: &Path) -> bool {
    path.is_file()
        || (path.is_dir()
            && std::fs::read_dir(path)
                .map(|mut d| d.next().is_some())
                .unwrap_or(false))
}

/// A copy of the single-file checkpoint `base` (original LDM layout) with the encoder of
/// `encoder_dir` in place of its text encoder; every other tensor is kept byte for byte
/// ([`crate::io::single_file`]). The base's config folder (`NAME.config/`) is copied beside `out`.
fn export_single_file(
    base: &str,
    encoder_dir: &Path,
    out: &Path,
    opts: &ExportOptions,
) -> Result<PathBuf> {
    use crate::io::single_file;
    single_file::refuse_pickle(out)?;
    let base_path = Path::new(base);
    if !single_file::is_single_file(base_path) {
        input_bail!(
            "--out {} asks for a single-file checkpoint, so the base must be one (an SD 1.x/2.x .safetensors in the original LDM layout), not `{base}`; give a folder as --out to write a diffusers pipeline",
            out.display()
        );
    }
    let encoder = crate::models::text_encoder::TextEncoder::load(
        &encoder_dir.to_string_lossy(),
        tch::Device::Cpu,
        tch::Kind::Float,
    )?;
    encoder.write_into_single_file(
        base_path,
        out,
        &single_file::WriteOptions {
            overwrite: opts.force,
            config_beside: true,
        },
    )?;
    Ok(out.to_path_buf())
}

/// Write the pipeline `base` with the text encoder of `encoder_dir` into `out` (see the module docs).
/// Returns `out`.
pub fn export_pipeline(
    base: &str,
    encoder_dir: &Path,
    out: &Path,
    opts: &ExportOptions,
) -> Result<PathBuf> {
    let format = opts.format.unwrap_or_else(|| ExportFormat::for_out(out));
    if format == ExportFormat::SingleFile {
        return export_single_file(base, encoder_dir, out, opts);
    }
    if holds_output(out) && !opts.force {
        input_bail!(
            "{} already exists: pass --force to replace it, or choose another --out",
            out.display()
        );
    }
    let plan = plan_export(base, encoder_dir)?;
    // Never replace (or write into) the inputs themselves.
    let out_abs =
        std::path::absolute(out).with_context(|| format!("resolving {}", out.display()))?;
    let out_real = std::fs::canonicalize(&out_abs).unwrap_or(out_abs.clone());
    let base_real = canonical(&plan.base_root)?;
    let enc_real = canonical(encoder_dir)?;
    if base_real.starts_with(&out_real) || out_real.starts_with(&base_real) {
        input_bail!(
            "--out {} is, holds or lies inside the base pipeline {}: write the export somewhere else",
            out.display(),
            base_real.display()
        );
    }
    if enc_real.starts_with(&out_real) {
        input_bail!(
            "--out {} is or holds the text encoder {}: write the export somewhere else",
            out.display(),
            enc_real.display()
        );
    }
    let parent = match out_abs.parent() {
        Some(p) => p.to_path_buf(),
        None => input_bail!("--out {}: give a folder path", out.display()),
    };
    std::fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
    let name = out_abs
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .ok_or_else(|| input_err!("--out {}: give a folder path", out.display()))?;
    let tmp = parent.join(format!(".tmp-export-{name}-{}", std::process::id()));
    remove_any(&tmp)?;
    let task = crate::progress::task("export", plan.files.len() as u64 + 1);
    let built = (|| -> Result<()> {
        for (src, rel) in &plan.files {
            place(src, &tmp.join(rel), opts.copy)?;
            task.inc(1);
        }
        crate::io::atomic::write_json(&tmp.join("model_index.json"), &plan.model_index)
    })();
    if let Err(e) = built {
        task.abandon();
        let _ = remove_any(&tmp);
        return Err(e);
    }
    task.inc(1);
    task.finish();
    // Swap into place: an old output (with --force) moves aside first and is removed last.
    let old = parent.join(format!(".old-export-{name}-{}", std::process::id()));
    let had_old = std::fs::symlink_metadata(&out_abs).is_ok();
    if had_old {
        remove_any(&old)?;
        std::fs::rename(&out_abs, &old)
            .with_context(|| format!("moving {} aside", out_abs.display()))?;
    }
    if let Err(e) = std::fs::rename(&tmp, &out_abs) {
        if had_old {
            let _ = std::fs::rename(&old, &out_abs);
        }
        let _ = remove_any(&tmp);
        return Err(anyhow::Error::new(e).context(format!(
            "renaming {} onto {}",
            tmp.display(),
            out_abs.display()
        )));
    }
    if had_old {
        remove_any(&old)?;
    }
    if !plan.dropped.is_empty() {
        crate::progress::note(&format!(
            "{}: the base declares {} but does not hold them; the export loads without them",
            out.display(),
            plan.dropped.join(", ")
        ));
    }
    Ok(out.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_file_outputs_are_told_apart_by_extension() {
        assert_eq!(
            ExportFormat::for_out(Path::new("a/model.safetensors")),
            ExportFormat::SingleFile
        );
        assert_eq!(
            ExportFormat::for_out(Path::new("a/pipeline")),
            ExportFormat::Diffusers
        );
    }
}
