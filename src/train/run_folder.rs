//! The training run folder of the conventions: experiment.toml, text_encoder/, tokenizer/,
//! metrics.json, tb/, checkpoint/, DONE (written last).
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

impl RunFolder {
    /// Check the folder against `--resume`/`--force`; `--force` clears a previous run's files. The one
    /// policy of every trainer: a finished run (DONE) is never overwritten without `--force`, an
    /// unfinished one is continued only with `--resume`.
    pub fn open(root: &Path, resume: bool, force: bool) -> Result<(Self, Start)> {
        let me = Self {
            root: root.to_path_buf(),
        };
        let has_content = root.is_dir() && std::fs::read_dir(root)?.next().is_some();
        if force {
            for sub in [
                "text_encoder",
                "tokenizer",
                "tb",
                "checkpoint",
                "checkpoint.tmp",
                "checkpoint.old",
                "metrics.json",
                "DONE",
                "experiment.toml",
            ] {
                let p = root.join(sub);
                if p.is_dir() {
                    std::fs::remove_dir_all(&p)?;
                } else if p.exists() {
                    std::fs::remove_file(&p)?;
                }
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
                input_bail!(
                    "{} has no checkpoint to resume from: pass --force to start over",
                    root.display()
                );
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
            std::fs::remove_dir_all(&tmp)?;
        }
        std::fs::create_dir_all(&tmp)?;
        write(&tmp)?;
        let cur = self.checkpoint();
        if cur.exists() {
            if old.exists() {
                std::fs::remove_dir_all(&old)?;
            }
            std::fs::rename(&cur, &old)?;
        }
        std::fs::rename(&tmp, &cur)?;
        if old.exists() {
            std::fs::remove_dir_all(&old)?;
        }
        Ok(())
    }

    /// A crash between the two renames leaves only `checkpoint.old`: take it back.
    pub fn recover_checkpoint(&self) -> Result<()> {
        let old = self.root.join("checkpoint.old");
        if !self.checkpoint().exists() && old.exists() {
            std::fs::rename(&old, self.checkpoint())?;
        }
        Ok(())
    }
}
