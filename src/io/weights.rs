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
        let st = SafeTensors::deserialize(&mmap).map_err(|e| {
            let detail = header_problem(&mmap).map_or(String::new(), |p| format!(": {p}"));
            input_err!("{} is not a valid safetensors file ({e}{detail}); it may be truncated or corrupt: download or write it again.", path.display())
        })?;
        // Every dtype must be one clipdoor can load (a float8 file passes the format's own checks).
        for (name, view) in st.tensors() {
            kind_of(view.dtype()).map_err(|e| {
                input_err!(
                    "tensor `{name}` in {}: {e}; convert the file to f32, f16 or bf16",
                    path.display()
                )
            })?;
        }
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

    /// One tensor's stored bytes, dtype and shape, without a copy (for byte-exact rewriting).
    pub fn raw(&self, name: &str) -> Result<(Dtype, Vec<usize>, &[u8])> {
        let st = SafeTensors::deserialize(&self.mmap).expect("validated in open");
        let view = st
            .tensor(name)
            .map_err(|_| input_err!("tensor `{name}` not found in {}", self.path.display()))?;
        Ok((view.dtype(), view.shape().to_vec(), view.data()))
    }

    /// The file's `__metadata__` (e.g. `{"format": "pt"}`).
    pub fn metadata(&self) -> Option<HashMap<String, String>> {
        SafeTensors::read_metadata(&self.mmap)
            .ok()
            .and_then(|(_, m)| m.metadata().clone())
    }

    /// All tensors by name (CPU, stored dtype).
    pub fn tensors(&self) -> Result<HashMap<String, Tensor>> {
        self.names()
            .into_iter()
            .map(|n| Ok((n.clone(), self.tensor(&n)?)))
            .collect()
    }
}

/// What is wrong with a safetensors header, as far as its JSON says: the first tensor whose byte range
/// does not match its shape and dtype, or lies beyond the end of the file. `None` when the header
/// itself cannot be read (the format's own error says why).
fn header_problem(bytes: &[u8]) -> Option<String> {
    let n = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    let end = 8usize.checked_add(usize::try_from(n).ok()?)?;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(bytes.get(8..end)?).ok()?;
    let data_len = (bytes.len() - end) as u128;
    for (name, info) in header.iter().filter(|(k, _)| *k != "__metadata__") {
        let dtype = info.get("dtype").and_then(|d| d.as_str()).unwrap_or("?");
        let shape: Option<Vec<u128>> = info.get("shape").and_then(|s| {
            s.as_array()?
                .iter()
                .map(|d| d.as_u64().map(u128::from))
                .collect()
        });
        let offsets: Option<Vec<u128>> = info.get("data_offsets").and_then(|s| {
            s.as_array()?
                .iter()
                .map(|d| d.as_u64().map(u128::from))
                .collect()
        });
        let (Some(shape), Some(&[a, b])) = (shape, offsets.as_deref()) else {
            return Some(format!(
                "tensor `{name}` lacks a valid shape or data_offsets"
            ));
        };
        if b < a || b > data_len {
            return Some(format!(
                "tensor `{name}` claims bytes {a}..{b} but the data holds {data_len} bytes"
            ));
        }
        let bits: u128 = match dtype {
            "F64" | "I64" | "U64" => 64,
            "F32" | "I32" | "U32" => 32,
            "F16" | "BF16" | "I16" | "U16" => 16,
            "F8_E5M2" | "F8_E4M3" | "F8_E8M0" | "I8" | "U8" | "BOOL" => 8,
            _ => continue,
        };
        let want = shape.iter().try_fold(bits, |acc, &d| acc.checked_mul(d))? / 8;
        if want != b - a {
            return Some(format!(
                "tensor `{name}` ({dtype}, shape {shape:?}) needs {want} bytes but its offsets give {}",
                b - a
            ));
        }
    }
    None
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
            let src = view_to_tensor(&view)
                .with_context(|| format!("tensor `{name}` in {}", file.path.display()))?;
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
