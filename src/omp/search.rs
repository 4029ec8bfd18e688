//! Runtime search: the process-wide state that decides which OpenMP runtime corestream
//! controls, from [`load`](super::load), `CORESTREAM_OMP_LIB` or a probe of the loaded
//! libraries.
//!
//! Invariants: [`ACTIVE`] is set at most once and never cleared, so the runtime is fixed for
//! the process once found; finding and loading are serialised by [`SEARCH`]; the environment
//! variable is read at most once; a probe that found nothing is repeated only when the set of
//! loaded libraries changed. No `unsafe` here: loading is `platform.rs`, symbols `symbols.rs`.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, PoisonError};

use super::symbols::Omp;
use super::{platform, OmpStatus, LIB_ENV};
use crate::error::{Error, Result};

/// The runtime in use, once found or loaded; fixed for the rest of the process.
static ACTIVE: OnceLock<Omp> = OnceLock::new();

/// Serialises finding and loading.
static SEARCH: Mutex<Search> = Mutex::new(Search {
    env_read: false,
    env_error: None,
    probed: None,
});

/// What the search knows between calls (guarded by [`SEARCH`]).
struct Search {
    /// Whether `CORESTREAM_OMP_LIB` was consulted (or made moot by [`load`](super::load)).
    env_read: bool,
    /// Why the library it names could not be used.
    env_error: Option<EnvError>,
    /// The loaded-library generation of the last probe that found nothing.
    probed: Option<platform::Generation>,
}

/// A bad `CORESTREAM_OMP_LIB`, kept to be reported at every use.
enum EnvError {
    Load { path: PathBuf, message: String },
    Symbols { path: PathBuf, symbol: String },
}

impl EnvError {
    /// Keeps `err`, met loading `path`, naming the environment variable in load errors.
    fn new(err: Error, path: &Path) -> EnvError {
        match err {
            Error::OmpSymbols { path, symbol } => EnvError::Symbols { path, symbol },
            Error::OmpLoad { path, message } => EnvError::Load {
                path,
                message: format!("{message} (named by {LIB_ENV})"),
            },
            other => EnvError::Load {
                path: path.to_owned(),
                message: other.to_string(),
            },
        }
    }

    /// The error to report, again, at this use.
    fn to_error(&self) -> Error {
        match self {
            EnvError::Load { path, message } => Error::OmpLoad {
                path: path.clone(),
                message: message.clone(),
            },
            EnvError::Symbols { path, symbol } => Error::OmpSymbols {
                path: path.clone(),
                symbol: symbol.clone(),
            },
        }
    }
}

// ===== search and load =====

/// [`super::detect`]: the status of the runtime in use, finding it first if needed.
pub(super) fn detect() -> Result<OmpStatus> {
    Ok(active()?.map_or_else(OmpStatus::none, Omp::status))
}

/// [`super::load`]: loads `path` and installs it, unless another runtime is in use.
pub(super) fn load(path: &Path) -> Result<OmpStatus> {
    let lib = platform::open_new(path)?;
    let omp = Omp::resolve(lib, Some(path.to_owned()), path)?;
    let mut search = SEARCH.lock().unwrap_or_else(PoisonError::into_inner);
    // An explicit choice: the environment variable is not consulted any more.
    search.env_read = true;
    match ACTIVE.get() {
        Some(active) if active.same_as(&omp) => {
            omp.keep_loaded();
            Ok(active.status())
        }
        // Loaded locally and never called: unloading it leaves the process as it was.
        Some(active) => {
            drop(omp);
            Err(Error::OmpConflict {
                active: active.describe(),
                requested: path.to_owned(),
            })
        }
        None => {
            search.env_error = None;
            platform::make_global(path);
            Ok(install(omp).status())
        }
    }
}

/// Makes `omp` the runtime of the process (the first one installed wins).
fn install(omp: Omp) -> &'static Omp {
    ACTIVE.get_or_init(|| omp)
}

/// The runtime to control, found at first use: `CORESTREAM_OMP_LIB`, else a runtime already
/// loaded in the process. `None` while there is none.
pub(super) fn active() -> Result<Option<&'static Omp>> {
    if let Some(omp) = ACTIVE.get() {
        return Ok(Some(omp));
    }
    let mut search = SEARCH.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(omp) = ACTIVE.get() {
        return Ok(Some(omp));
    }
    if !search.env_read {
        search.env_read = true;
        if let Some(path) = std::env::var_os(LIB_ENV).filter(|p| !p.is_empty()) {
            let path = PathBuf::from(path);
            match platform::open_new(&path)
                .and_then(|lib| Omp::resolve(lib, Some(path.clone()), &path))
            {
                Ok(omp) => {
                    platform::make_global(&path);
                    return Ok(Some(install(omp)));
                }
                Err(e) => search.env_error = Some(EnvError::new(e, &path)),
            }
        }
    }
    if let Some(e) = &search.env_error {
        return Err(e.to_error());
    }
    let generation = platform::generation();
    if generation.is_some() && search.probed == generation {
        return Ok(None);
    }
    let mut found: Vec<Omp> = Vec::new();
    platform::probe(&mut |lib, shown| match Omp::resolve(lib, None, shown) {
        Ok(omp) if found.iter().any(|f| f.same_as(&omp)) => {
            omp.keep_loaded();
            true
        }
        Ok(omp) => {
            found.push(omp);
            true
        }
        Err(_) => false,
    });
    found.sort_by_key(|omp| omp.runtime.rank());
    let mut found = found.into_iter();
    match found.next() {
        Some(best) => {
            found.for_each(Omp::keep_loaded);
            Ok(Some(install(best)))
        }
        None => {
            search.probed = generation;
            Ok(None)
        }
    }
}
