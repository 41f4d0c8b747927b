//! safetensors ⇄ `VarStore`, with names exactly as the Python libraries write them, so weights load
//! without a renaming table. Every mismatch (missing, unexpected, wrong shape, truncated file) is an
//! input error that names the file, the tensor and the fix.
use anyhow::Context;
use safetensors::{tensor::TensorView, Dtype, SafeTensors};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use tch::{nn::VarStore, Kind, Tensor};

use crate::error::Result;
use crate::input_err;

/// The tensors of one safetensors file (memory-mapped; tensors are created on demand).
pub struct SafetensorsFile {
    path: std::path::PathBuf,
    mmap: memmap2::Mmap,
}

impl SafetensorsFile {
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| {
            input_err!("cannot open weight file {}: {e}. Check the path; a model folder needs model.safetensors (or diffusion_pytorch_model.safetensors).", path.display())
        })?;
        // SAFETY: read-only map of a file we do not modify; a concurrent writer would be a user error.
        let mmap = unsafe { memmap2::Mmap::map(&file) }
            .with_context(|| format!("memory-mapping {}", path.display()))?;
        SafeTensors::deserialize(&mmap).map_err(|e| {
            input_err!("{} is not a valid safetensors file ({e}); it may be truncated or corrupt: download or write it again.", path.display())
        })?;
        Ok(Self {
            path: path.to_owned(),
            mmap,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn st(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.mmap).expect("validated in open")
    }

    pub fn names(&self) -> Vec<String> {
        let mut n: Vec<String> = self.st().names().into_iter().map(str::to_owned).collect();
        n.sort();
        n
    }

    /// Load one tensor (on CPU, in its stored dtype).
    pub fn tensor(&self, name: &str) -> Result<Tensor> {
        let st = self.st();
        let view = st
            .tensor(name)
            .map_err(|_| input_err!("tensor `{name}` not found in {}", self.path.display()))?;
        view_to_tensor(&view).with_context(|| format!("tensor `{name}` in {}", self.path.display()))
    }

    /// All tensors by name (CPU, stored dtype).
    pub fn tensors(&self) -> Result<HashMap<String, Tensor>> {
        self.names()
            .into_iter()
            .map(|n| Ok((n.clone(), self.tensor(&n)?)))
            .collect()
    }
}

fn kind_of(dtype: Dtype) -> Result<Kind> {
    Ok(match dtype {
        Dtype::F32 => Kind::Float,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::F64 => Kind::Double,
        Dtype::I64 => Kind::Int64,
        Dtype::I32 => Kind::Int,
        Dtype::I16 => Kind::Int16,
        Dtype::I8 => Kind::Int8,
        Dtype::U8 => Kind::Uint8,
        Dtype::BOOL => Kind::Bool,
        other => return Err(input_err!("unsupported safetensors dtype {other:?}")),
    })
}

fn dtype_of(kind: Kind) -> Result<Dtype> {
    Ok(match kind {
        Kind::Float => Dtype::F32,
        Kind::Half => Dtype::F16,
        Kind::BFloat16 => Dtype::BF16,
        Kind::Double => Dtype::F64,
        Kind::Int64 => Dtype::I64,
        Kind::Int => Dtype::I32,
        Kind::Int16 => Dtype::I16,
        Kind::Int8 => Dtype::I8,
        Kind::Uint8 => Dtype::U8,
        Kind::Bool => Dtype::BOOL,
        other => anyhow::bail!("cannot store tensors of kind {other:?} in safetensors"),
    })
}

fn view_to_tensor(view: &TensorView<'_>) -> Result<Tensor> {
    let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
    Ok(Tensor::f_from_data_size(
        view.data(),
        &shape,
        kind_of(view.dtype())?,
    )?)
}

/// Copy every variable of `vs` from the file, converting to the store's kind. Missing tensors,
/// tensors of the wrong shape and (unless `allow_unexpected`) unknown tensors are input errors.
/// `ignore` lists names that may be present in the file without a variable (e.g. buffers such as
/// `position_ids` that older transformers versions saved).
pub fn load_var_store(vs: &mut VarStore, file: &SafetensorsFile, ignore: &[&str]) -> Result<()> {
    load_var_store_renamed(vs, file, ignore, &|n| n.to_string())
}

/// As [`load_var_store`], reading variable `v` from the file's tensor `file_name(v)` (for layouts
/// that differ only by a prefix). `ignore` entries match file names by prefix or suffix.
pub fn load_var_store_renamed(
    vs: &mut VarStore,
    file: &SafetensorsFile,
    ignore: &[&str],
    file_name: &dyn Fn(&str) -> String,
) -> Result<()> {
    let st = file.st();
    let mut missing = vec![];
    let vars = vs.variables();
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    tch::no_grad(|| -> Result<()> {
        for name in names {
            let var = &vars[name];
            let Ok(view) = st.tensor(&file_name(name)) else {
                missing.push(name.clone());
                continue;
            };
            let src = view_to_tensor(&view)?;
            if src.size() != var.size() {
                return Err(input_err!(
                    "tensor `{name}` in {} has shape {:?} but the config gives {:?}: the config.json beside it does not describe these weights (fix the config or use the weights it was written for)",
                    file.path.display(), src.size(), var.size()
                ));
            }
            let mut var = var.shallow_clone();
            var.f_copy_(&src.to_device(var.device()).to_kind(var.kind()))?;
        }
        Ok(())
    })?;
    if !missing.is_empty() {
        return Err(input_err!(
            "{} lacks {} tensor(s) the config needs, e.g. `{}`: the file is incomplete or belongs to a different architecture",
            file.path.display(), missing.len(), missing[0]
        ));
    }
    let used: std::collections::HashSet<String> = vars.keys().map(|v| file_name(v)).collect();
    let unexpected: Vec<String> = file
        .names()
        .into_iter()
        .filter(|n| !used.contains(n) && !ignore.iter().any(|i| n.ends_with(i) || n.starts_with(i)))
        .collect();
    if !unexpected.is_empty() {
        return Err(input_err!(
            "{} has {} tensor(s) the config does not use, e.g. `{}`: config.json disagrees with the weights (more layers, or another model class)",
            file.path.display(), unexpected.len(), unexpected[0]
        ));
    }
    Ok(())
}

/// Save tensors (any device/kind) as a safetensors file with `{"format": "pt"}` metadata, as
/// transformers and diffusers write it, converting floating tensors to `kind`. Atomic.
pub fn save_tensors(path: &Path, tensors: &[(String, Tensor)], kind: Option<Kind>) -> Result<()> {
    let mut owned: Vec<(String, Vec<u8>, Vec<usize>, Dtype)> = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let mut t = t.detach().to_device(tch::Device::Cpu);
        if let Some(k) = kind {
            if t.is_floating_point() {
                t = t.to_kind(k);
            }
        }
        let t = t.contiguous();
        let numel = t.numel();
        let elt = t.kind().elt_size_in_bytes();
        let mut bytes = vec![0u8; numel * elt];
        t.f_copy_data_u8(&mut bytes, numel)?;
        let shape = t.size().iter().map(|&d| d as usize).collect();
        owned.push((name.clone(), bytes, shape, dtype_of(t.kind())?));
    }
    let views: Vec<(String, TensorView<'_>)> = owned
        .iter()
        .map(|(n, b, s, d)| Ok((n.clone(), TensorView::new(*d, s.clone(), b)?)))
        .collect::<Result<_>>()?;
    let mut meta = HashMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    let bytes = safetensors::serialize(views, Some(meta))?;
    crate::io::atomic::write_atomic(path, &bytes)
}

/// Save all variables of a store, sorted by name.
pub fn save_var_store(path: &Path, vs: &VarStore, kind: Option<Kind>) -> Result<()> {
    let vars: BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
    let list: Vec<(String, Tensor)> = vars.into_iter().collect();
    save_tensors(path, &list, kind)
}
