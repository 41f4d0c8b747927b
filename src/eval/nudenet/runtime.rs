//! Finding and loading ONNX Runtime and the NudeNet model file. ONNX Runtime is loaded dynamically
//! (the `ort` crate's `load-dynamic`), by default from the `onnxruntime` wheel in the project venv, so
//! nothing is downloaded at build time.
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ort::environment::Environment;

use crate::error::Result;

const INSTALL_HINT: &str =
    "install it with `pip install nudenet onnxruntime` (or `bash scripts/setup.sh`, \
     which builds the project venv .venv with both)";

/// Python site-packages folders of the venvs we look in: `$VIRTUAL_ENV` (a venv the user activated)
/// and the venv of the source tree this binary was built from. Never a venv found relative to the
/// current directory: running clipdoor inside an untrusted folder must not load a library planted
/// there.
fn site_packages() -> Vec<PathBuf> {
    let mut venvs: Vec<PathBuf> = Vec::new();
    if let Some(v) = std::env::var_os("VIRTUAL_ENV") {
        venvs.push(v.into());
    }
    venvs.push(Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv"));
    let mut out = Vec::new();
    for venv in venvs {
        let Ok(entries) = std::fs::read_dir(venv.join("lib")) else {
            continue;
        };
        let mut pythons: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("python3"))
            })
            .collect();
        pythons.sort();
        out.extend(
            pythons
                .into_iter()
                .map(|p| p.join("site-packages"))
                .filter(|p| p.is_dir()),
        );
    }
    out
}

/// The shared library inside an `onnxruntime` wheel (`onnxruntime/capi/libonnxruntime.so.X.Y.Z`).
fn wheel_library(site: &Path) -> Option<PathBuf> {
    let capi = site.join("onnxruntime/capi");
    let mut libs: Vec<PathBuf> = std::fs::read_dir(&capi)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().is_some_and(|n| {
                let n = n.to_string_lossy();
                n.starts_with("libonnxruntime.so")
                    || n.starts_with("libonnxruntime.") && n.ends_with(".dylib")
                    || n == "onnxruntime.dll"
            })
        })
        .collect();
    // Prefer the fully versioned file (the others are links to it or absent).
    libs.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    libs.into_iter().next()
}

/// ONNX Runtime library: the given path, else `ORT_DYLIB_PATH`, else the venv's `onnxruntime` wheel.
pub fn find_ort_library(explicit: Option<&Path>) -> Result<PathBuf> {
    let chosen = match explicit {
        Some(p) => Some((p.to_path_buf(), "the path given")),
        None => std::env::var_os("ORT_DYLIB_PATH")
            .filter(|v| !v.is_empty())
            .map(|v| (PathBuf::from(v), "ORT_DYLIB_PATH")),
    };
    if let Some((path, source)) = chosen {
        if !path.is_file() {
            crate::input_bail!(
                "ONNX Runtime library {} ({source}) does not exist; point it at libonnxruntime.so, or unset it \
                 to use the one in the project venv ({INSTALL_HINT})",
                path.display()
            );
        }
        return Ok(path);
    }
    site_packages().iter().find_map(|s| wheel_library(s)).ok_or_else(|| {
        crate::input_err!(
            "ONNX Runtime library not found: no onnxruntime wheel in $VIRTUAL_ENV or {}/.venv, and \
             ORT_DYLIB_PATH is not set; {INSTALL_HINT}, or set ORT_DYLIB_PATH to a libonnxruntime.so (1.31+)",
            env!("CARGO_MANIFEST_DIR")
        )
    })
}

/// NudeNet's detector: the given path, else `320n.onnx` in the venv's `nudenet` package.
pub fn find_model(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        if !p.is_file() {
            crate::input_bail!(
                "NudeNet model {} does not exist; give the path of 320n.onnx (it ships inside the nudenet \
                 package: site-packages/nudenet/320n.onnx), or {INSTALL_HINT}",
                p.display()
            );
        }
        return Ok(p.to_path_buf());
    }
    site_packages()
        .into_iter()
        .map(|s| s.join("nudenet/320n.onnx"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            crate::input_err!(
                "NudeNet model 320n.onnx not found: no nudenet package in $VIRTUAL_ENV or {}/.venv; \
                 {INSTALL_HINT}, or pass the path of 320n.onnx",
                env!("CARGO_MANIFEST_DIR")
            )
        })
}

static ENVIRONMENT: Mutex<Option<(Environment, PathBuf)>> = Mutex::new(None);

/// The process-wide ONNX Runtime environment and the library it came from. The library can be loaded
/// only once per process: the first successful call decides which file is used, later calls reuse it.
pub fn environment(library: Option<&Path>) -> Result<(Environment, PathBuf)> {
    let mut slot = ENVIRONMENT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(loaded) = slot.as_ref() {
        return Ok(loaded.clone());
    }
    let path = find_ort_library(library)?;
    let builder = ort::init_from(&path).map_err(|e| {
        crate::input_err!(
            "cannot load ONNX Runtime from {}: {e}; {INSTALL_HINT}, or set ORT_DYLIB_PATH to a working \
             libonnxruntime.so (1.31+)",
            path.display()
        )
    })?;
    let env = builder.build().map_err(|e| {
        anyhow::anyhow!(
            "creating the ONNX Runtime environment from {}: {e}",
            path.display()
        )
    })?;
    *slot = Some((env.clone(), path.clone()));
    Ok((env, path))
}
