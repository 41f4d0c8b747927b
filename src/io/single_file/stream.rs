//! A safetensors writer that streams tensor bytes from borrowed slices (memory-mapped inputs) into an
//! atomic output, so a multi-GB checkpoint is rewritten without holding a second copy in memory and
//! untouched tensors stay byte-identical.
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;

use safetensors::Dtype;

use crate::error::Result;

/// One output tensor: its bytes may be several pieces (q, k, v merged into `in_proj`).
pub(crate) struct Entry<'a> {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub data: Vec<Cow<'a, [u8]>>,
}

impl<'a> Entry<'a> {
    pub fn new(name: String, dtype: Dtype, shape: Vec<usize>, data: &'a [u8]) -> Self {
        Self {
            name,
            dtype,
            shape,
            data: vec![Cow::Borrowed(data)],
        }
    }

    fn len(&self) -> usize {
        self.data.iter().map(|d| d.len()).sum()
    }
}

/// Write `entries` (sorted by name) as a safetensors file at `path`, atomically.
pub(crate) fn write(
    path: &Path,
    mut entries: Vec<Entry<'_>>,
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    for w in entries.windows(2) {
        if w[0].name == w[1].name {
            anyhow::bail!("two tensors named `{}` in {}", w[0].name, path.display());
        }
    }
    let mut header = serde_json::Map::new();
    if let Some(m) = metadata {
        let m: BTreeMap<String, String> = m.into_iter().collect();
        header.insert("__metadata__".into(), serde_json::to_value(m)?);
    }
    let mut offset = 0usize;
    for e in &entries {
        let want = e.shape.iter().product::<usize>() * e.dtype.bitsize() / 8;
        if want != e.len() {
            anyhow::bail!(
                "tensor `{}` has {} bytes but its shape {:?} ({:?}) needs {want}",
                e.name,
                e.len(),
                e.shape,
                e.dtype
            );
        }
        header.insert(
            e.name.clone(),
            serde_json::json!({
                "dtype": e.dtype,
                "shape": e.shape,
                "data_offsets": [offset, offset + e.len()],
            }),
        );
        offset += e.len();
    }
    let mut head = serde_json::to_vec(&header)?;
    // The format pads the header with spaces to a multiple of 8 bytes.
    while head.len() % 8 != 0 {
        head.push(b' ');
    }
    crate::io::atomic::write_atomic_with(path, |w| {
        w.write_all(&(head.len() as u64).to_le_bytes())?;
        w.write_all(&head)?;
        for e in &entries {
            for piece in &e.data {
                w.write_all(piece)?;
            }
        }
        Ok(())
    })
}
