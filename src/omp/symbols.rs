//! The resolved OpenMP runtime: [`Omp`] holds the library and typed pointers to the functions
//! corestream calls (omp.h's team-size API, libgomp's `GOMP_parallel`, the kmp affinity API of
//! libiomp5 and libomp).
//!
//! Unsafe boundary: resolving a symbol to a function pointer is sound only with the symbol's
//! exact C prototype (the type aliases below spell each one out), and calling it only while the
//! library is loaded. Invariants: an `Omp` is either installed for the rest of the process
//! (`search::ACTIVE`) or given up with [`Omp::keep_loaded`], which never unloads the library;
//! only an `Omp` that was never called may be dropped (unloading its library). Plain calls into
//! the runtime are wrapped here as safe methods; `GOMP_parallel`, which takes a callback and a
//! `void *`, is called from `team.rs`.

use std::ffi::{c_int, c_uint, c_void};
use std::fmt;
use std::path::{Path, PathBuf};

use libloading::Library;

use super::{platform, OmpStatus, Runtime};
use crate::error::{Error, Result};

type SetNumThreads = unsafe extern "C" fn(c_int);
type GetInt = unsafe extern "C" fn() -> c_int;
/// The outlined body of a parallel region: `void (*)(void *)`.
pub(super) type Microtask = extern "C" fn(*mut c_void);
/// `void GOMP_parallel(void (*fn)(void *), void *data, unsigned num_threads, unsigned flags)`.
pub(super) type GompParallel = unsafe extern "C" fn(Microtask, *mut c_void, c_uint, c_uint);
/// `kmp_affinity_mask_t` is `void *`.
type KmpMask = *mut c_void;
/// `kmp_create_affinity_mask`, `kmp_destroy_affinity_mask`.
type KmpMaskFn = unsafe extern "C" fn(*mut KmpMask);
/// `int kmp_set_affinity_mask_proc(int proc, kmp_affinity_mask_t *mask)`.
type KmpMaskProc = unsafe extern "C" fn(c_int, *mut KmpMask) -> c_int;
/// `int kmp_set_affinity(kmp_affinity_mask_t *mask)`.
type KmpSetAffinity = unsafe extern "C" fn(*mut KmpMask) -> c_int;

// ===== impl Kmp =====

/// The kmp affinity API of libiomp5 and libomp. Each call acts on the calling thread.
pub(super) struct Kmp {
    create_mask: KmpMaskFn,
    set_mask_proc: KmpMaskProc,
    set_affinity: KmpSetAffinity,
    destroy_mask: KmpMaskFn,
}

impl Kmp {
    /// Binds the calling thread to exactly `cpus` through the runtime, so that its own record
    /// of the thread's mask stays right.
    pub(super) fn bind_current(&self, cpus: &[usize]) -> std::result::Result<(), String> {
        if cpus.is_empty() {
            return Err("the cpu set is empty".into());
        }
        let mut mask: KmpMask = std::ptr::null_mut();
        // SAFETY: kmp_create_affinity_mask stores a new, empty mask in the location it is given,
        // a live local here.
        unsafe { (self.create_mask)(&mut mask) };
        let mut result = Ok(());
        for &cpu in cpus {
            let rc = match c_int::try_from(cpu) {
                // SAFETY: `mask` was created above and not destroyed yet; any proc number is
                // accepted (out-of-range ones are refused with a non-zero return).
                Ok(proc) => unsafe { (self.set_mask_proc)(proc, &mut mask) },
                Err(_) => -1,
            };
            if rc != 0 {
                result = Err(format!("kmp_set_affinity_mask_proc({cpu}) returned {rc}"));
                break;
            }
        }
        if result.is_ok() {
            // SAFETY: `mask` is a live mask of this runtime; the call binds the calling thread.
            let rc = unsafe { (self.set_affinity)(&mut mask) };
            if rc != 0 {
                result = Err(format!("kmp_set_affinity returned {rc}"));
            }
        }
        // SAFETY: `mask` was created by kmp_create_affinity_mask and is destroyed once.
        unsafe { (self.destroy_mask)(&mut mask) };
        result
    }
}

// ===== impl Omp =====

/// An OpenMP runtime with its symbols resolved. Lives in `search::ACTIVE` for the rest of the
/// process once installed, so the function pointers never outlive the library.
pub(super) struct Omp {
    pub(super) runtime: Runtime,
    path: Option<PathBuf>,
    set_num_threads: SetNumThreads,
    get_max_threads: GetInt,
    get_thread_num: GetInt,
    /// `GOMP_parallel`, called by `team.rs`.
    pub(super) parallel: Option<GompParallel>,
    /// The kmp affinity API (libiomp5 and libomp only).
    pub(super) kmp: Option<Kmp>,
    lib: Library,
}

impl fmt::Debug for Omp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Omp")
            .field("runtime", &self.runtime)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Omp {
    /// Resolves the symbols of `lib`; `shown` names the library in errors.
    pub(super) fn resolve(lib: Library, path: Option<PathBuf>, shown: &Path) -> Result<Omp> {
        /// # Safety
        ///
        /// `T` must be the C type of the symbol `name`.
        unsafe fn symbol<T: Copy>(lib: &Library, name: &str) -> Option<T> {
            // SAFETY: the caller guarantees that `T` is the symbol's type; the value is copied
            // out and used only while the library stays loaded (see `Omp`).
            unsafe { lib.get::<T>(name.as_bytes()).ok().map(|s| *s) }
        }
        let required = |name: &str| Error::OmpSymbols {
            path: shown.to_owned(),
            symbol: name.to_owned(),
        };
        // SAFETY: each type is the symbol's C prototype: omp.h's `void omp_set_num_threads(int)`,
        // `int omp_get_max_threads(void)` and `int omp_get_thread_num(void)`, libgomp's ABI for
        // `GOMP_parallel`, and the kmp affinity API (kmp_affinity_mask_t is `void *`), as spelled
        // out in the aliases above.
        let (set_num_threads, get_max_threads, get_thread_num, parallel, kmp) = unsafe {
            (
                symbol::<SetNumThreads>(&lib, "omp_set_num_threads"),
                symbol::<GetInt>(&lib, "omp_get_max_threads"),
                symbol::<GetInt>(&lib, "omp_get_thread_num"),
                symbol::<GompParallel>(&lib, "GOMP_parallel"),
                (|| {
                    Some(Kmp {
                        create_mask: symbol(&lib, "kmp_create_affinity_mask")?,
                        set_mask_proc: symbol(&lib, "kmp_set_affinity_mask_proc")?,
                        set_affinity: symbol(&lib, "kmp_set_affinity")?,
                        destroy_mask: symbol(&lib, "kmp_destroy_affinity_mask")?,
                    })
                })(),
            )
        };
        let set_num_threads = set_num_threads.ok_or_else(|| required("omp_set_num_threads"))?;
        let get_max_threads = get_max_threads.ok_or_else(|| required("omp_get_max_threads"))?;
        let get_thread_num = get_thread_num.ok_or_else(|| required("omp_get_thread_num"))?;
        let path = path.or_else(|| platform::library_path(get_max_threads as *const c_void));
        let runtime = path
            .as_deref()
            .and_then(Runtime::from_file_name)
            .unwrap_or(match &kmp {
                None => Runtime::Gnu,
                Some(_) if shown.to_string_lossy().contains("iomp") => Runtime::Intel,
                Some(_) => Runtime::Llvm,
            });
        Ok(Omp {
            runtime,
            path,
            set_num_threads,
            get_max_threads,
            get_thread_num,
            parallel,
            kmp,
            lib,
        })
    }

    /// What [`super::status`] reports for this runtime.
    pub(super) fn status(&self) -> OmpStatus {
        let team_binding =
            self.parallel.is_some() && (self.kmp.is_some() || cfg!(target_os = "linux"));
        OmpStatus {
            runtime: Some(self.runtime),
            path: self.path.clone(),
            team_binding,
            per_thread_binding: team_binding && self.kmp.is_some(),
        }
    }

    /// The library's path, else the runtime's name (for error messages).
    pub(super) fn describe(&self) -> String {
        match &self.path {
            Some(path) => path.display().to_string(),
            None => self.runtime.to_string(),
        }
    }

    /// Whether both resolve to the same library (the same `omp_get_max_threads`).
    pub(super) fn same_as(&self, other: &Omp) -> bool {
        self.get_max_threads as usize == other.get_max_threads as usize
    }

    /// Drops the resolved symbols but never unloads the library: an OpenMP runtime that may
    /// have been initialised is not safe to unload.
    pub(super) fn keep_loaded(self) {
        std::mem::forget(self.lib);
    }

    /// `omp_get_max_threads()`: the calling thread's team size (nthreads-var).
    pub(super) fn max_threads(&self) -> c_int {
        // SAFETY: omp_get_max_threads has no preconditions.
        unsafe { (self.get_max_threads)() }
    }

    /// `omp_set_num_threads(threads)` for the calling thread, at least 1.
    pub(super) fn set_team_size(&self, threads: c_int) {
        // SAFETY: omp_set_num_threads accepts any value (non-positive ones are ignored or
        // reported by the runtime); it sets the calling thread's nthreads-var.
        unsafe { (self.set_num_threads)(threads.max(1)) }
    }

    /// The calling thread's index in its current team (0 outside a parallel region).
    pub(super) fn thread_num(&self) -> c_int {
        // SAFETY: omp_get_thread_num has no preconditions.
        unsafe { (self.get_thread_num)() }
    }
}
