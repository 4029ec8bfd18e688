//! Finding, checking and loading the ONNX Runtime library (see the [module docs](super)).

use std::ffi::CStr;
use std::panic;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ::ort::environment::Environment;

use crate::error::{Error, Result};
use crate::stream::panic_message;

/// Where `scripts/fetch-onnxruntime.sh` puts the library, relative to the corestream
/// repository's root. Looked for at run time, never at a path fixed when corestream was built:
/// in the folders above the running executable ([`fetched_library_near`]), then in the current
/// folder (see [`library_candidates`]).
pub const FETCHED_LIBRARY: &str = "target/onnxruntime/libonnxruntime.so";

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

/// How to get a library; without an explicit path, also where the executable's folders were
/// searched in vain.
fn fetch_hint(explicit: Option<&Path>) -> String {
    let searched = match (explicit, std::env::current_exe()) {
        (None, Ok(exe)) if fetched_library_near(&exe).is_none() => {
            format!("no folder above {} has {FETCHED_LIBRARY}; ", exe.display())
        }
        _ => String::new(),
    };
    format!(
        "{searched}run scripts/fetch-onnxruntime.sh in the corestream repository (it puts ONNX Runtime {}+ at {FETCHED_LIBRARY} there), or set ORT_DYLIB_PATH to a libonnxruntime.so",
        format_args!("1.{MIN_MINOR_VERSION}")
    )
}

/// The places looked at, in order, for `explicit` (see the [module docs](super)): `explicit`
/// alone when given; else `ORT_DYLIB_PATH` when set, the fetched library nearest above the
/// running executable when there is one ([`fetched_library_near`]), and [`FETCHED_LIBRARY`]
/// in the current folder.
///
/// ```
/// use corestream::backend::ort::{library_candidates, FETCHED_LIBRARY};
///
/// let explicit = std::path::Path::new("/opt/onnxruntime/lib/libonnxruntime.so");
/// assert_eq!(library_candidates(Some(explicit)), [explicit]);
/// let default = library_candidates(None);
/// let here = std::env::current_dir()?.join(FETCHED_LIBRARY);
/// assert!(default.contains(&here));
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn library_candidates(explicit: Option<&Path>) -> Vec<PathBuf> {
    if let Some(path) = explicit {
        return vec![path.to_path_buf()];
    }
    let mut out = Vec::new();
    if let Some(env) = std::env::var_os("ORT_DYLIB_PATH").filter(|v| !v.is_empty()) {
        out.push(PathBuf::from(env));
    }
    if let Some(near) = std::env::current_exe()
        .ok()
        .and_then(|exe| fetched_library_near(&exe))
    {
        out.push(near);
    }
    if let Ok(cwd) = std::env::current_dir() {
        let here = cwd.join(FETCHED_LIBRARY);
        if !out.contains(&here) {
            out.push(here);
        }
    }
    out
}

/// The fetched library for an executable at `exe`: `dir/`[`FETCHED_LIBRARY`] for the nearest
/// folder `dir` above `exe` where that file exists, if any. A program cargo built in a
/// corestream checkout (`<repo>/target/release/corestream`, a test in
/// `<repo>/target/debug/deps/`) finds the library that `scripts/fetch-onnxruntime.sh` put in
/// `<repo>/target/onnxruntime/`, wherever the checkout is. Only looks at the file system:
/// `exe` itself need not exist.
///
/// ```
/// use corestream::backend::ort::{fetched_library_near, FETCHED_LIBRARY};
///
/// let repo = tempfile::tempdir()?;
/// let exe = repo.path().join("target/release/corestream");
/// assert_eq!(fetched_library_near(&exe), None);
/// let lib = repo.path().join(FETCHED_LIBRARY);
/// std::fs::create_dir_all(lib.parent().unwrap())?;
/// std::fs::write(&lib, b"")?;
/// assert_eq!(fetched_library_near(&exe), Some(lib));
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn fetched_library_near(exe: &Path) -> Option<PathBuf> {
    exe.ancestors()
        .skip(1)
        .map(|dir| dir.join(FETCHED_LIBRARY))
        .find(|candidate| candidate.is_file())
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
        hint: fetch_hint(explicit),
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
