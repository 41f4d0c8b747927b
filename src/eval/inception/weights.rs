//! Reading the FID Inception weights into the `VarStore` of [`super::model::FIDInceptionV3`].
//!
//! Accepted: a safetensors file with either key layout, pytorch-fid's `InceptionV3` state dict
//! (`blocks.0.0.conv.weight`) or the released `pt_inception-2015-12-05-6726825d.pth` dict converted
//! as is (`Conv2d_1a_3x3.conv.weight`, plus the unused `fc.*`). A pickled `.pth` is refused (unpickling can
//! run code); the error gives the one-line conversion.
use std::collections::HashMap;
use std::path::Path;
use tch::{nn::VarStore, Kind, Tensor};

use super::model::PTH_PREFIXES;
use crate::error::Result;
use crate::input_bail;
use crate::io::weights::SafetensorsFile;

/// Where the weights come from (documented in docs/fid-kid.md).
pub const FID_WEIGHTS_URL: &str = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth";

/// The fix offered whenever a file cannot be used.
pub fn conversion_hint(path: &Path) -> String {
    let out = path.with_extension("safetensors");
    format!(
        "get {FID_WEIGHTS_URL} and convert it once with Python: \
         python -c \"import torch, safetensors.torch as st; st.save_file(torch.load('{}', map_location='cpu'), '{}')\"",
        path.display(),
        out.display()
    )
}

/// Key layout of a weight file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// pytorch-fid `InceptionV3.state_dict()`: `blocks.0.0.conv.weight`.
    PytorchFid,
    /// torchvision `Inception3` names, as in `pt_inception-2015-12-05-6726825d.pth`.
    Inception3,
}

impl Layout {
    /// The file's name for variable `var` (a `blocks.i.j.` path).
    pub fn file_name(self, var: &str) -> String {
        match self {
            Layout::PytorchFid => var.to_string(),
            Layout::Inception3 => PTH_PREFIXES
                .iter()
                .find_map(|(b, t)| var.strip_prefix(b).map(|rest| format!("{t}{rest}")))
                .unwrap_or_else(|| var.to_string()),
        }
    }
}

/// All tensors of the file, by name (CPU).
fn read_tensors(path: &Path) -> Result<HashMap<String, Tensor>> {
    if !path.is_file() {
        input_bail!(
            "FID Inception weight file {} not found: give the path of a local file; {}",
            path.display(),
            conversion_hint(path)
        );
    }
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    if ext == "safetensors" {
        return SafetensorsFile::open(path)?.tensors();
    }
    if matches!(ext.as_str(), "pth" | "pt" | "bin" | "ckpt" | "pkl") {
        // A pickle can run code when it is read; clipdoor reads none (docs/reliability.md).
        input_bail!(
            "{} is a PyTorch pickle, which clipdoor never reads (unpickling can run code): \
             convert it once to safetensors; {}",
            path.display(),
            conversion_hint(path)
        );
    }
    input_bail!(
        "{} is neither .safetensors nor .pth: the FID Inception weights must be a safetensors file; {}",
        path.display(),
        conversion_hint(path)
    )
}

fn detect_layout(path: &Path, t: &HashMap<String, Tensor>) -> Result<Layout> {
    if t.contains_key("blocks.0.0.conv.weight") {
        return Ok(Layout::PytorchFid);
    }
    if !t.contains_key("Conv2d_1a_3x3.conv.weight") {
        input_bail!(
            "{} holds no Inception v3 weights (neither `blocks.0.0.conv.weight` of pytorch-fid's \
             InceptionV3 nor `Conv2d_1a_3x3.conv.weight` of pt_inception-2015-12-05-6726825d.pth): \
             {}",
            path.display(),
            conversion_hint(path)
        );
    }
    // torchvision's ImageNet weights share every conv shape but not the FID graph's weights.
    let fc_rows = t.get("fc.weight").map(|w| w.size()[0]);
    if t.keys().any(|k| k.starts_with("AuxLogits.")) || fc_rows == Some(1000) {
        input_bail!(
            "{} looks like torchvision's ImageNet Inception v3 (1000 classes / AuxLogits), not the \
             TensorFlow FID Inception (1008 classes): FID/KID from it would not be comparable; {}",
            path.display(),
            conversion_hint(path)
        );
    }
    Ok(Layout::Inception3)
}

/// Copy the file's tensors into `vs` (as f32). Every mismatch is an input error naming the tensor.
pub fn load(vs: &mut VarStore, path: &Path) -> Result<Layout> {
    let file = read_tensors(path)?;
    let layout = detect_layout(path, &file)?;
    let vars = vs.variables();
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    let mut missing = vec![];
    for name in &names {
        let fname = layout.file_name(name);
        match file.get(&fname) {
            None => missing.push(fname),
            Some(src) if src.size() != vars[*name].size() => input_bail!(
                "tensor `{fname}` in {} has shape {:?}, FID Inception v3 needs {:?}: the file is \
                 not (an unmodified copy of) pt_inception-2015-12-05-6726825d.pth; {}",
                path.display(),
                src.size(),
                vars[*name].size(),
                conversion_hint(path)
            ),
            Some(_) => {}
        }
    }
    if !missing.is_empty() {
        input_bail!(
            "{} lacks {} of the {} FID Inception tensors, e.g. `{}`: the file is incomplete or another \
             network; {}",
            path.display(),
            missing.len(),
            names.len(),
            missing[0],
            conversion_hint(path)
        );
    }
    let used: std::collections::HashSet<String> =
        names.iter().map(|n| layout.file_name(n)).collect();
    let mut unexpected: Vec<&String> = file
        .keys()
        .filter(|k| {
            !used.contains(*k)
                && !k.ends_with("num_batches_tracked")
                && !(layout == Layout::Inception3 && k.starts_with("fc."))
        })
        .collect();
    unexpected.sort();
    if let Some(first) = unexpected.first() {
        input_bail!(
            "{} has {} tensor(s) FID Inception v3 does not have, e.g. `{first}`: another network's \
             weights; {}",
            path.display(),
            unexpected.len(),
            conversion_hint(path)
        );
    }
    tch::no_grad(|| -> Result<()> {
        for name in names {
            let src = &file[&layout.file_name(name)];
            let mut var = vars[name].shallow_clone();
            var.f_copy_(&src.to_kind(Kind::Float).to_device(var.device()))?;
        }
        Ok(())
    })?;
    Ok(layout)
}
