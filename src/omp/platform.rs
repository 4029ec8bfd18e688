//! Platform code: the dynamic loader. Loads a runtime library, lists and opens the libraries
//! already loaded, and names the file a symbol comes from.
//!
//! Unsafe boundary: `dlopen` (which runs a library's initialisers), `dl_iterate_phdr` with Rust
//! callbacks, and `dladdr`. Invariants: nothing is loaded that was not already in the process
//! except the library named by [`load`](super::load) or `CORESTREAM_OMP_LIB` ([`open_new`]);
//! a refused library keeps its symbols local (`RTLD_LOCAL`) until accepted ([`make_global`]);
//! libraries are only searched for symbols here, never called. Linux only: elsewhere
//! [`open_new`] is a plain load and nothing already loaded is found.

#[cfg(target_os = "linux")]
pub(super) use linux::{generation, library_path, make_global, open_new, probe, Generation};
#[cfg(not(target_os = "linux"))]
pub(super) use other::{generation, library_path, make_global, open_new, probe, Generation};

#[cfg(target_os = "linux")]
mod linux {
    use std::ffi::{c_int, c_void, CStr, OsStr};
    use std::mem::MaybeUninit;
    use std::os::unix::ffi::OsStrExt;
    use std::path::{Path, PathBuf};

    use libloading::os::unix::{Library as UnixLibrary, RTLD_GLOBAL, RTLD_LOCAL, RTLD_NOW};
    use libloading::Library;

    use crate::error::{Error, Result};
    use crate::omp::Runtime;

    /// Names under which the runtimes are usually loaded (their sonames), best first.
    const WELL_KNOWN: [&str; 5] = [
        "libiomp5.so",
        "libomp.so",
        "libomp.so.5",
        "libgomp.so.1",
        "libgomp.so",
    ];

    /// Loads `path` (running its initialisers), with its symbols kept local until
    /// [`make_global`] (a library that is refused must not change how later libraries link).
    pub(in crate::omp) fn open_new(path: &Path) -> Result<Library> {
        // SAFETY: loading runs the library's initialisers. The caller named this library as an
        // OpenMP runtime, whose initialisers only set up the runtime; a library that turns out
        // not to be one is only ever searched for symbols, never called.
        unsafe { UnixLibrary::open(Some(path), RTLD_NOW | RTLD_LOCAL) }
            .map(Library::from)
            .map_err(|e| Error::OmpLoad {
                path: path.to_owned(),
                message: e.to_string(),
            })
    }

    /// Adds the already-loaded `path` to the global symbol scope, so that libraries loaded later
    /// resolve their OpenMP symbols to it. Best effort; the handle is kept.
    pub(in crate::omp) fn make_global(path: &Path) {
        let flags = libc::RTLD_NOLOAD | RTLD_NOW | RTLD_GLOBAL;
        // SAFETY: RTLD_NOLOAD only finds the object loaded by `open_new` (its initialisers have
        // run); RTLD_GLOBAL changes its symbol visibility, nothing else.
        let lib = unsafe { UnixLibrary::open(Some(path), flags) };
        if let Ok(lib) = lib {
            std::mem::forget(lib);
        }
    }

    /// A handle to `name` only if it is already loaded: nothing new is loaded or initialised.
    fn open_loaded(name: &OsStr) -> Option<Library> {
        // SAFETY: with RTLD_NOLOAD, dlopen returns a handle to an object that is already in the
        // process (its initialisers have run) or fails; it never loads anything.
        unsafe { UnixLibrary::open(Some(name), libc::RTLD_NOLOAD | RTLD_NOW) }
            .ok()
            .map(Library::from)
    }

    /// Offers every library that may be an OpenMP runtime already loaded to `consider` (the
    /// well-known names, renamed copies among the loaded objects, and, when `consider` took
    /// none of those, the program's global symbol scope); `consider` answers whether the
    /// library was a runtime.
    pub(in crate::omp) fn probe(consider: &mut dyn FnMut(Library, &Path) -> bool) {
        let mut any = false;
        for name in WELL_KNOWN {
            if let Some(lib) = open_loaded(OsStr::new(name)) {
                any |= consider(lib, Path::new(name));
            }
        }
        for path in loaded_objects() {
            if Runtime::from_file_name(&path).is_some() {
                if let Some(lib) = open_loaded(path.as_os_str()) {
                    any |= consider(lib, &path);
                }
            }
        }
        if !any {
            // Statically linked into the program, or loaded with RTLD_GLOBAL under another
            // name: the global scope has the symbols.
            let this = Library::from(UnixLibrary::this());
            consider(this, Path::new("<global symbol scope>"));
        }
    }

    /// The paths of the loaded objects (the program itself and the vDSO have none).
    fn loaded_objects() -> Vec<PathBuf> {
        unsafe extern "C" fn collect(
            info: *mut libc::dl_phdr_info,
            _size: libc::size_t,
            data: *mut c_void,
        ) -> c_int {
            // SAFETY: `data` is the `&mut Vec<PathBuf>` passed below, used by this callback
            // only; `info` is valid for the call; a non-null `dlpi_name` is a C string.
            unsafe {
                let names = &mut *data.cast::<Vec<PathBuf>>();
                let name = (*info).dlpi_name;
                if !name.is_null() {
                    let bytes = CStr::from_ptr(name).to_bytes();
                    if !bytes.is_empty() {
                        names.push(PathBuf::from(OsStr::from_bytes(bytes)));
                    }
                }
            }
            0
        }
        let mut names: Vec<PathBuf> = Vec::new();
        // SAFETY: `collect` matches the callback type and only touches `names` through `data`,
        // which lives across the call.
        unsafe { libc::dl_iterate_phdr(Some(collect), (&mut names as *mut Vec<PathBuf>).cast()) };
        names
    }

    /// glibc's counts of objects loaded and unloaded so far.
    pub(in crate::omp) type Generation = (libc::c_ulonglong, libc::c_ulonglong);

    /// The current [`Generation`]: unchanged means there is nothing new to find.
    pub(in crate::omp) fn generation() -> Option<Generation> {
        unsafe extern "C" fn first(
            info: *mut libc::dl_phdr_info,
            size: libc::size_t,
            data: *mut c_void,
        ) -> c_int {
            // The counters exist only when the loader passes the long form of the struct.
            let with_counters = std::mem::offset_of!(libc::dl_phdr_info, dlpi_subs)
                + std::mem::size_of::<libc::c_ulonglong>();
            if size >= with_counters {
                // SAFETY: `data` is the `&mut Option<(u64, u64)>` passed below; `info` is valid
                // for the call and, per `size`, has the counter fields.
                unsafe {
                    *data.cast::<Option<Generation>>() =
                        Some(((*info).dlpi_adds, (*info).dlpi_subs));
                }
            }
            1
        }
        let mut generation: Option<Generation> = None;
        // SAFETY: `first` matches the callback type and only writes `generation` through
        // `data`, which lives across the call.
        unsafe {
            libc::dl_iterate_phdr(
                Some(first),
                (&mut generation as *mut Option<Generation>).cast(),
            )
        };
        generation
    }

    /// The file of the loaded object containing `addr`.
    pub(in crate::omp) fn library_path(addr: *const c_void) -> Option<PathBuf> {
        let mut info = MaybeUninit::<libc::Dl_info>::zeroed();
        // SAFETY: dladdr only looks `addr` up (it is not dereferenced) and fills `info`.
        let rc = unsafe { libc::dladdr(addr, info.as_mut_ptr()) };
        if rc == 0 {
            return None;
        }
        // SAFETY: dladdr succeeded, so `info` is filled (and was zeroed before).
        let info = unsafe { info.assume_init() };
        if info.dli_fname.is_null() {
            return None;
        }
        // SAFETY: a non-null `dli_fname` is the object's C string name, alive while the object
        // is loaded, which it is (we hold a handle to it).
        let bytes = unsafe { CStr::from_ptr(info.dli_fname) }.to_bytes();
        (!bytes.is_empty()).then(|| PathBuf::from(OsStr::from_bytes(bytes)))
    }
}

#[cfg(not(target_os = "linux"))]
mod other {
    use std::ffi::c_void;
    use std::path::{Path, PathBuf};

    use libloading::Library;

    use crate::error::{Error, Result};

    /// Loads `path` (running its initialisers).
    pub(in crate::omp) fn open_new(path: &Path) -> Result<Library> {
        // SAFETY: loading runs the library's initialisers. The caller named this library as an
        // OpenMP runtime, whose initialisers only set up the runtime.
        unsafe { Library::new(path) }.map_err(|e| Error::OmpLoad {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    /// Symbol scope is left as the platform loader sets it.
    pub(in crate::omp) fn make_global(_path: &Path) {}

    /// Finding an already-loaded runtime is implemented for Linux only.
    pub(in crate::omp) fn probe(_consider: &mut dyn FnMut(Library, &Path) -> bool) {}

    /// No load counters: every search probes (and finds nothing).
    pub(in crate::omp) type Generation = ();

    /// Unknown here.
    pub(in crate::omp) fn generation() -> Option<Generation> {
        None
    }

    /// Unknown here.
    pub(in crate::omp) fn library_path(_addr: *const c_void) -> Option<PathBuf> {
        None
    }
}
