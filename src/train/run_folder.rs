//! The training run folder of the conventions: experiment.toml, text_encoder/, tokenizer/,
//! metrics.json, tb/, checkpoint/, DONE (written last).
//!
//! One policy for every trainer (the text-encoder trainer, `clipdoor shapes train`): a finished run
//! (DONE) is refused without `--force`, an unfinished one is continued only with `--resume`, and
//! `checkpoint/` is replaced atomically. What a trainer writes inside the folder is its own: it names
//! those entries for `--force` to clear ([`RunFolder::open_with`]).
use anyhow::Context;
use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::input_bail;

pub struct RunFolder {
    pub root: PathBuf,
}

/// What to do with an existing folder.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Start {
    Fresh,
    Resume,
}

/// Where `clipdoor train --save-pipeline` writes the exported diffusers pipeline, once the run is done.
pub const PIPELINE_DIR: &str = "pipeline";

/// The entries of a text-encoder training run (what `--force` clears).
pub const TEXT_ENCODER_RUN: &[&str] = &[
    PIPELINE_DIR,
    // --save-pipeline with a single-file base: the copy and its config folder.
    "pipeline.safetensors",
    "pipeline.config",
    "text_encoder",
    "tokenizer",
    "tb",
    "checkpoint",
    "checkpoint.tmp",
    "checkpoint.old",
    "metrics.json",
    "DONE",
    "experiment.toml",
];

impl RunFolder {
    /// Check the folder against `--resume`/`--force`; `--force` clears a previous run's files. The one
    /// policy of every trainer: a finished run (DONE) is never overwritten without `--force`, an
    /// unfinished one is continued only with `--resume`.
    pub fn open(root: &Path, resume: bool, force: bool) -> Result<(Self, Start)> {
        Self::open_with(root, resume, force, TEXT_ENCODER_RUN)
    }

    /// [`RunFolder::open`] for a trainer that writes `outputs` (entries directly under the root,
    /// `checkpoint*` and `DONE` among them): `--force` removes those and nothing else.
    pub fn open_with(
        root: &Path,
        resume: bool,
        force: bool,
        outputs: &[&str],
    ) -> Result<(Self, Start)> {
        let me = Self {
            root: root.to_path_buf(),
        };
        let has_content = root.is_dir()
            && std::fs::read_dir(root)
                .with_context(|| format!("reading {}", root.display()))?
                .next()
                .is_some();
        if force {
            for sub in outputs {
                remove_entry(&root.join(sub))?;
            }
            return Ok((me, Start::Fresh));
        }
        // A crash between the two renames of a checkpoint swap leaves only `checkpoint.old`: take
        // it back before deciding whether there is something to resume.
        me.recover_checkpoint()?;
        if me.done() {
            input_bail!("{} holds a finished run (DONE): pass --force to train again into it, or choose another --out", root.display());
        }
        if resume {
            if me.checkpoint().join("state.json").exists() {
                return Ok((me, Start::Resume));
            }
            if has_content {
                // A run killed before its first checkpoint: when the folder holds nothing but this
                // trainer's own unfinished outputs, nothing can be lost by starting it again.
                let foreign = std::fs::read_dir(root)
                    .with_context(|| format!("reading {}", root.display()))?
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().to_string())
                    // `.tmp-*`: an atomic write the kill interrupted.
                    .filter(|n| !outputs.contains(&n.as_str()) && !n.starts_with(".tmp-"))
                    .collect::<Vec<_>>();
                if !foreign.is_empty() {
                    input_bail!(
                        "{} has no checkpoint to resume from and holds files no clipdoor run wrote ({}): pass --force to start over, or choose another --out",
                        root.display(),
                        foreign.join(", ")
                    );
                }
                for sub in outputs {
                    remove_entry(&root.join(sub))?;
                }
                crate::progress::note(&format!(
                    "{}: the interrupted run wrote no checkpoint yet; starting it again from step 0",
                    root.display()
                ));
            }
            return Ok((me, Start::Fresh));
        }
        if has_content {
            input_bail!("{} already holds an unfinished run: pass --resume to continue it, or --force to start over", root.display());
        }
        Ok((me, Start::Fresh))
    }

    pub fn done(&self) -> bool {
        self.root.join("DONE").exists()
    }
    pub fn checkpoint(&self) -> PathBuf {
        self.root.join("checkpoint")
    }
    pub fn tb(&self) -> PathBuf {
        self.root.join("tb")
    }

    /// Replace `checkpoint/` with a fully written `checkpoint.tmp/` (the old one survives until the
    /// new one is complete, so a crash never leaves no checkpoint).
    pub fn commit_checkpoint(&self, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
        let tmp = self.root.join("checkpoint.tmp");
        let old = self.root.join("checkpoint.old");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
        }
        std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        write(&tmp)?;
        let cur = self.checkpoint();
        if cur.exists() {
            if old.exists() {
                std::fs::remove_dir_all(&old)
                    .with_context(|| format!("removing {}", old.display()))?;
            }
            std::fs::rename(&cur, &old)
                .with_context(|| format!("renaming {} to {}", cur.display(), old.display()))?;
        }
        // A crash here leaves checkpoint.old and checkpoint.tmp but no checkpoint/: open() recovers.
        crate::fault::point("checkpoint-swap")?;
        std::fs::rename(&tmp, &cur)
            .with_context(|| format!("renaming {} to {}", tmp.display(), cur.display()))?;
        if old.exists() {
            std::fs::remove_dir_all(&old).with_context(|| format!("removing {}", old.display()))?;
        }
        Ok(())
    }

    /// A crash between the two renames leaves only `checkpoint.old`: take it back.
    pub fn recover_checkpoint(&self) -> Result<()> {
        let old = self.root.join("checkpoint.old");
        if !self.checkpoint().exists() && old.exists() {
            std::fs::rename(&old, self.checkpoint()).with_context(|| {
                format!(
                    "renaming {} back to {}",
                    old.display(),
                    self.checkpoint().display()
                )
            })?;
        }
        Ok(())
    }
}

fn remove_entry(p: &Path) -> Result<()> {
    if p.is_dir() {
        std::fs::remove_dir_all(p).with_context(|| format!("removing {}", p.display()))?;
    } else if p.exists() {
        std::fs::remove_file(p).with_context(|| format!("removing {}", p.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_with_applies_the_one_policy_to_a_trainers_own_entries() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("run");
        let outputs = [
            "unet",
            "checkpoint",
            "checkpoint.tmp",
            "checkpoint.old",
            "DONE",
        ];
        // An empty or missing folder starts fresh, with or without --resume.
        assert_eq!(
            RunFolder::open_with(&root, true, false, &outputs)
                .unwrap()
                .1,
            Start::Fresh
        );
        std::fs::create_dir_all(root.join("checkpoint.old")).unwrap();
        std::fs::write(root.join("checkpoint.old/state.json"), "{}").unwrap();
        // Content without --resume is refused; a crash between the renames is recovered first.
        assert!(RunFolder::open_with(&root, false, false, &outputs).is_err());
        let (folder, start) = RunFolder::open_with(&root, true, false, &outputs).unwrap();
        assert_eq!(start, Start::Resume);
        assert!(folder.checkpoint().join("state.json").exists());
        // A finished run is refused without --force, even with --resume.
        std::fs::write(root.join("DONE"), "").unwrap();
        let err = RunFolder::open_with(&root, true, false, &outputs)
            .err()
            .unwrap();
        assert!(err.to_string().contains("--force"), "{err}");
        // --force clears the trainer's entries and nothing else.
        std::fs::create_dir_all(root.join("unet")).unwrap();
        std::fs::write(root.join("notes.txt"), "mine").unwrap();
        let (_, start) = RunFolder::open_with(&root, false, true, &outputs).unwrap();
        assert_eq!(start, Start::Fresh);
        for gone in ["unet", "checkpoint", "DONE"] {
            assert!(!root.join(gone).exists(), "{gone} survived --force");
        }
        assert!(root.join("notes.txt").exists());
    }
}
