//! Reading the I2P prompt file and choosing prompts from it.
use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::{input_bail, input_err};

/// I2P's seven categories, in the order of the SLD paper's tables.
pub const CATEGORIES: [&str; 7] = [
    "hate",
    "harassment",
    "violence",
    "self-harm",
    "sexual",
    "shocking",
    "illegal activity",
];

/// Accepted spellings of the per-prompt seed and guidance columns: the original release
/// (`sd_seed`, `sd_guidance_scale`) and the copy the erasure papers use (`evaluation_seed`,
/// `evaluation_guidance`).
pub const SEED_COLUMNS: [&str; 2] = ["sd_seed", "evaluation_seed"];
pub const GUIDANCE_COLUMNS: [&str; 2] = ["sd_guidance_scale", "evaluation_guidance"];

/// One I2P prompt with its own generation settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct I2pPrompt {
    /// 0-based data row in the file (the header is not a row): names the prompt's images.
    pub row: usize,
    pub prompt: String,
    /// The `categories` cell split at commas, trimmed, lower-case (multi-label).
    pub categories: Vec<String>,
    pub hard: bool,
    pub seed: u64,
    pub guidance: f64,
    /// `sd_image_width` / `sd_image_height` (`None` when the file lacks them; then the run gives a size).
    pub width: Option<i64>,
    pub height: Option<i64>,
    /// I2P's own measurements on SD 1.4 (10 images per prompt), when the file has them: percent of
    /// images judged inappropriate (Q16 or NudeNet) and percent with nudity.
    pub inappropriate_percentage: Option<f64>,
    pub nudity_percentage: Option<f64>,
}

/// Which prompts to evaluate: categories (a prompt in any of them), hard ones only, the first `limit`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct I2pFilter {
    pub categories: Vec<String>,
    pub hard_only: bool,
    pub limit: Option<usize>,
}

fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| {
        input_err!(
            "cannot read the I2P file {} ({e}): give the I2P CSV (prompt, categories, hard, seed, guidance and size columns)",
            path.display()
        )
    })?;
    if path.extension().is_some_and(|e| e == "gz") {
        let mut out = vec![];
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| input_err!("{} is not valid gzip ({e})", path.display()))?;
        return Ok(out);
    }
    Ok(raw)
}

/// Read an I2P CSV (`.tsv` for tabs, optionally `.gz`). Needed columns: `prompt`, `categories`,
/// `hard`, the seed (`sd_seed` or `evaluation_seed`), the guidance (`sd_guidance_scale` or
/// `evaluation_guidance`) and, unless `need_size` is false, `sd_image_width` and `sd_image_height`.
/// `inappropriate_percentage` and `nudity_percentage` are read when present. A missing column is an
/// input error listing the columns found and the ones needed; a bad cell names its line and column.
pub fn read_i2p(path: &Path, need_size: bool) -> Result<Vec<I2pPrompt>> {
    let bytes = read_bytes(path)?;
    let name = path.to_string_lossy().to_lowercase();
    let delim = if name.trim_end_matches(".gz").ends_with(".tsv") {
        b'\t'
    } else {
        b','
    };
    let mut rdr = csv::ReaderBuilder::new()
        .delimiter(delim)
        .flexible(true)
        .from_reader(&bytes[..]);
    let headers: Vec<String> = rdr
        .headers()
        .map_err(|e| input_err!("cannot read the header line of {} ({e})", path.display()))?
        .iter()
        .map(|h| h.trim().trim_start_matches('\u{feff}').to_string())
        .collect();
    let find = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| headers.iter().position(|h| h == n))
    };
    let mut needed: Vec<(&str, Option<usize>)> = vec![
        ("prompt", find(&["prompt"])),
        ("categories", find(&["categories"])),
        ("hard", find(&["hard"])),
        ("sd_seed (or evaluation_seed)", find(&SEED_COLUMNS)),
        (
            "sd_guidance_scale (or evaluation_guidance)",
            find(&GUIDANCE_COLUMNS),
        ),
    ];
    let (wcol, hcol) = (find(&["sd_image_width"]), find(&["sd_image_height"]));
    if need_size {
        needed.push(("sd_image_width", wcol));
        needed.push(("sd_image_height", hcol));
    }
    let missing: Vec<&str> = needed
        .iter()
        .filter(|(_, c)| c.is_none())
        .map(|(n, _)| *n)
        .collect();
    if !missing.is_empty() {
        let all: Vec<&str> = needed.iter().map(|(n, _)| *n).collect();
        input_bail!(
            "{} lacks the column(s) {}: an I2P file needs {}{}; it has: {}",
            path.display(),
            missing.join(", "),
            all.join(", "),
            if need_size {
                " (give --width and --height to do without the size columns)"
            } else {
                ""
            },
            headers.join(", ")
        );
    }
    let col = |i: usize| needed[i].1.unwrap();
    let (c_prompt, c_cat, c_hard, c_seed, c_guid) = (col(0), col(1), col(2), col(3), col(4));
    let c_inap = find(&["inappropriate_percentage"]);
    let c_nud = find(&["nudity_percentage"]);
    let mut out = vec![];
    for (row, rec) in rdr.records().enumerate() {
        let line = rec
            .as_ref()
            .ok()
            .and_then(|r| r.position())
            .map_or(row + 2, |p| p.line() as usize);
        let rec = rec.map_err(|e| {
            input_err!(
                "{} row {}: malformed CSV ({e}): fix or remove the row",
                path.display(),
                row + 1
            )
        })?;
        let cell = |c: usize| rec.get(c).unwrap_or("").trim();
        let bad = |c: usize, what: &str| {
            input_err!(
                "{} line {line}, column `{}`: `{}` is not {what}: fix the cell or remove the row",
                path.display(),
                headers[c],
                cell(c)
            )
        };
        let num = |c: usize| -> Result<f64> {
            cell(c)
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| bad(c, "a number"))
        };
        let seed = cell(c_seed)
            .parse::<u64>()
            .or_else(|_| {
                // Some exports write integers as floats (`4261553411.0`).
                cell(c_seed)
                    .parse::<f64>()
                    .ok()
                    .filter(|v| *v >= 0.0 && v.fract() == 0.0 && *v < 1.8e19)
                    .map(|v| v as u64)
                    .ok_or(())
            })
            .map_err(|_| bad(c_seed, "a seed (a whole number >= 0)"))?;
        let guidance = num(c_guid)?;
        let size = |c: Option<usize>| -> Result<Option<i64>> {
            let Some(c) = c else { return Ok(None) };
            let v = cell(c)
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 8.0 && v.fract() == 0.0 && (*v as i64) % 8 == 0);
            match v {
                Some(v) => Ok(Some(v as i64)),
                // The run gives its own size: the column is informational.
                None if !need_size => Ok(None),
                None => Err(bad(c, "an image side in pixels (a multiple of 8)")),
            }
        };
        let hard = match cell(c_hard) {
            "1" | "1.0" | "true" | "True" | "TRUE" => true,
            "0" | "0.0" | "false" | "False" | "FALSE" | "" => false,
            _ => return Err(bad(c_hard, "0 or 1")),
        };
        let opt = |c: Option<usize>| -> Result<Option<f64>> {
            match c {
                Some(c) if !cell(c).is_empty() => num(c).map(Some),
                _ => Ok(None),
            }
        };
        out.push(I2pPrompt {
            row,
            prompt: rec.get(c_prompt).unwrap_or("").trim().to_string(),
            categories: cell(c_cat)
                .split(',')
                .map(|c| c.trim().to_lowercase())
                .filter(|c| !c.is_empty())
                .collect(),
            hard,
            seed,
            guidance,
            width: size(wcol)?,
            height: size(hcol)?,
            inappropriate_percentage: opt(c_inap)?,
            nudity_percentage: opt(c_nud)?,
        });
    }
    if out.is_empty() {
        input_bail!("{} holds no prompts (only a header)", path.display());
    }
    Ok(out)
}

impl I2pFilter {
    /// Parse `--categories a,b` (case-insensitive; `all` or empty = every category).
    pub fn parse_categories(s: &str) -> Vec<String> {
        let v: Vec<String> = s
            .split(',')
            .map(|c| c.trim().to_lowercase())
            .filter(|c| !c.is_empty())
            .collect();
        if v.iter().any(|c| c == "all") {
            vec![]
        } else {
            v
        }
    }

    /// The prompts this filter keeps, in file order. A category no prompt of the file carries is an
    /// input error listing the file's categories (a typo would otherwise select nothing).
    pub fn apply(&self, prompts: &[I2pPrompt], file: &Path) -> Result<Vec<I2pPrompt>> {
        let known: std::collections::BTreeSet<&str> = prompts
            .iter()
            .flat_map(|p| p.categories.iter().map(String::as_str))
            .collect();
        for c in &self.categories {
            if !known.contains(c.as_str()) {
                input_bail!(
                    "--categories: no prompt of {} is in category `{c}`; its categories are: {}",
                    file.display(),
                    known.iter().copied().collect::<Vec<_>>().join(", ")
                );
            }
        }
        let kept: Vec<I2pPrompt> = prompts
            .iter()
            .filter(|p| !self.hard_only || p.hard)
            .filter(|p| {
                self.categories.is_empty()
                    || p.categories.iter().any(|c| self.categories.contains(c))
            })
            .take(self.limit.unwrap_or(usize::MAX))
            .cloned()
            .collect();
        if kept.is_empty() {
            input_bail!(
                "no prompt of {} passes the filters ({}): widen --categories, drop --hard-only or raise --limit",
                file.display(),
                self.describe()
            );
        }
        Ok(kept)
    }

    /// `categories=sexual,violence hard-only limit=100` (for reports and errors).
    pub fn describe(&self) -> String {
        let mut parts = vec![];
        parts.push(if self.categories.is_empty() {
            "all categories".to_string()
        } else {
            format!("categories={}", self.categories.join(","))
        });
        if self.hard_only {
            parts.push("hard only".into());
        }
        if let Some(n) = self.limit {
            parts.push(format!("first {n}"));
        }
        parts.join(", ")
    }
}

/// Categories in report order: I2P's seven (those present), then any others alphabetically.
pub fn category_order<'a>(present: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let present: std::collections::BTreeSet<&str> = present.into_iter().collect();
    let mut out: Vec<String> = CATEGORIES
        .iter()
        .filter(|c| present.contains(*c))
        .map(|c| c.to_string())
        .collect();
    out.extend(
        present
            .iter()
            .filter(|c| !CATEGORIES.contains(c))
            .map(|c| c.to_string()),
    );
    out
}
