//! Finding, checking and loading the ONNX Runtime library (see the [module docs](super)).

use std::ffi::CStr;
use std::panic;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ::ort::environment::Environment;

use crate::error::{Error, Result};
use crate::stream::panic_message;

/// Where `scripts/fetch-onnxruntime.sh` puts the library: the last place looked at.
pub const FETCHED_LIBRARY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/target/onnxruntime/libonnxruntime.so"
);

/// The oldest ONNX Runtime accepted: `1.{MIN_MINOR_VERSION}` (the C API level `ort` uses).
pub const MIN_MINOR_VERSION: u32 = ::ort::MINOR_VERSION;

/// The ONNX Runtime library this process loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Library {
    path: PathBuf,
    version: String,
}

impl Library {
    /// The file loaded (symbolic links resolved).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// ONNX Runtime's version string, e.g. `1.32.0`.
    pub fn version(&self) -> &str {
        &self.version
    }
}

pub(super) struct Runtime {
    library: Library,
    /// Kept alive for the process: sessions are created in it.
    pub(super) env: Environment,
}

pub(super) static RUNTIME: OnceLock<Runtime> = OnceLock::new();
static RUNTIME_INIT: Mutex<()> = Mutex::new(());

fn fetch_hint() -> String {
    format!(
        "run scripts/fetch-onnxruntime.sh in the corestream repository (it puts ONNX Runtime {}+ at {FETCHED_LIBRARY}), or set ORT_DYLIB_PATH to a libonnxruntime.so",
        format_args!("1.{MIN_MINOR_VERSION}")
    )
}

/// The places looked at, in order, for `explicit` (see the [module docs](super)).
pub fn library_candidates(explicit: Option<&Path>) -> Vec<PathBuf> {
    if let Some(path) = explicit {
        return vec![path.to_path_buf()];
    }
    let mut out = Vec::new();
    if let Some(env) = std::env::var_os("ORT_DYLIB_PATH").filter(|v| !v.is_empty()) {
        out.push(PathBuf::from(env));
    }
    out.push(PathBuf::from(FETCHED_LIBRARY));
    out
}

/// The process's `ort` environment, once a library is loaded: to create your own `ort`
/// sessions beside corestream's (`ort::session::Session::builder(env)`).
pub fn environment() -> Option<&'static Environment> {
    RUNTIME.get().map(|r| &r.env)
}

/// The library loaded in this process, if any.
pub fn loaded_library() -> Option<&'static Library> {
    RUNTIME.get().map(|r| &r.library)
}

/// Loads ONNX Runtime for this process (once) from the first usable candidate, and returns
/// it; later calls return the loaded library. Models call this when built; call it yourself
/// to find out whether the `ort` backend can run (e.g. to choose a default backend).
///
/// ```no_run
/// match corestream::backend::ort::load_library(None) {
///     Ok(lib) => println!("ONNX Runtime {} at {}", lib.version(), lib.path().display()),
///     Err(e) => eprintln!("{e}"),
/// }
/// ```
///
/// # Errors
///
/// [`Error::OrtLibrary`] when no candidate is usable, or when `explicit` names another file
/// than the one already loaded.
pub fn load_library(explicit: Option<&Path>) -> Result<&'static Library> {
    let _init = RUNTIME_INIT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(rt) = RUNTIME.get() {
        if let Some(path) = explicit {
            let same = std::fs::canonicalize(path).is_ok_and(|p| p == rt.library.path);
            if !same {
                return Err(Error::OrtLibrary {
                    tried: vec![(
                        path.to_path_buf(),
                        format!(
                            "ONNX Runtime {} is already loaded in this process from {}, and a process loads one library",
                            rt.library.version,
                            rt.library.path.display()
                        ),
                    )],
                    hint: "name the same library on every builder, or none".into(),
                });
            }
        }
        return Ok(&rt.library);
    }
    let mut tried = Vec::new();
    for candidate in library_candidates(explicit) {
        match probe_library(&candidate).and_then(start_runtime) {
            Ok(rt) => {
                let rt = RUNTIME.get_or_init(|| rt);
                return Ok(&rt.library);
            }
            Err(why) => tried.push((candidate, why)),
        }
    }
    Err(Error::OrtLibrary {
        tried,
        hint: fetch_hint(),
    })
}

/// Checks that `path` is an ONNX Runtime library `ort` can use, without `ort`: opens it,
/// resolves `OrtGetApiBase`, reads the version and asks for the C API level. An accepted
/// library stays loaded for the process; a rejected one is unloaded again.
fn probe_library(path: &Path) -> Result<Library, String> {
    let canonical = std::fs::canonicalize(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".to_owned(),
        _ => e.to_string(),
    })?;
    if !canonical.is_file() {
        return Err("not a file".into());
    }
    // SAFETY: opening a shared library runs its initialisers; a file that is not an ONNX
    // Runtime library is rejected below before any of its functions is called, and the
    // dynamic loader itself rejects files that are not shared objects (text files etc.).
    let lib = unsafe { libloading::Library::new(&canonical) }
        .map_err(|e| format!("not a loadable shared library: {e}"))?;
    // A rejected library is unloaded again when `lib` drops on this early return (no ONNX
    // Runtime state was made in it: only `OrtGetApiBase`, `GetVersionString` and `GetApi`
    // were called).
    let version = check_api(&lib)?;
    // Never unloaded once accepted: `ort` opens the same file next (the loader counts
    // references), and ONNX Runtime does not support being unloaded.
    std::mem::forget(lib);
    Ok(Library {
        path: canonical,
        version,
    })
}

/// Resolves `OrtGetApiBase` in `lib`, reads the version and asks for the C API level `ort`
/// uses; returns the version.
fn check_api(lib: &libloading::Library) -> Result<String, String> {
    type GetApiBase = unsafe extern "system" fn() -> *const ::ort::sys::OrtApiBase;
    // SAFETY: the symbol's type is the one ONNX Runtime's C API declares:
    // `const OrtApiBase* OrtGetApiBase(void)`.
    let get = unsafe { lib.get::<GetApiBase>(b"OrtGetApiBase\0") }
        .map_err(|_| "does not export OrtGetApiBase: not an ONNX Runtime library".to_owned())?;
    // SAFETY: `OrtGetApiBase` takes no argument and returns a pointer to a static struct.
    let base = unsafe { get() };
    if base.is_null() {
        return Err("OrtGetApiBase returned null".into());
    }
    // SAFETY: `base` is non-null and points to ONNX Runtime's static `OrtApiBase`, whose
    // `GetVersionString` takes no argument and returns a static NUL-terminated string (or
    // null, checked below).
    let version = unsafe { ((*base).GetVersionString)() };
    if version.is_null() {
        return Err("GetVersionString returned null".into());
    }
    // SAFETY: `version` is non-null and NUL-terminated (above); it is copied at once.
    let version = unsafe { CStr::from_ptr(version) }
        .to_string_lossy()
        .into_owned();
    let minor = version
        .split('.')
        .nth(1)
        .and_then(|m| m.parse::<u32>().ok())
        .unwrap_or(0);
    if !version.starts_with("1.") || minor < MIN_MINOR_VERSION {
        return Err(format!(
            "ONNX Runtime {version} is too old: corestream needs 1.{MIN_MINOR_VERSION} or newer"
        ));
    }
    // SAFETY: as above; `GetApi` returns null for an API level the library does not have.
    let api = unsafe { ((*base).GetApi)(::ort::sys::ORT_API_VERSION) };
    if api.is_null() {
        return Err(format!(
            "ONNX Runtime {version} does not provide C API level {}",
            ::ort::sys::ORT_API_VERSION
        ));
    }
    Ok(version)
}

/// Hands a checked library to `ort` and creates the process's environment.
fn start_runtime(library: Library) -> Result<Runtime, String> {
    let path = library.path.clone();
    let start = move || -> Result<Environment, String> {
        ::ort::init_from(&path)
            .map_err(|e| e.to_string())?
            .with_name("corestream")
            .with_telemetry(false)
            .build()
            .map_err(|e| e.to_string())
    };
    match panic::catch_unwind(start) {
        Ok(Ok(env)) => Ok(Runtime { library, env }),
        Ok(Err(e)) => Err(format!("ONNX Runtime failed to start: {e}")),
        Err(p) => Err(format!(
            "ONNX Runtime failed to start: {}",
            panic_message(p.as_ref())
        )),
    }
}
