//! OpenMP control: find the OpenMP runtime of the process and confine its threads to the
//! streams' CPUs.
//!
//! Models often run OpenMP-threaded kernels (oneDNN, MKL, OpenBLAS built with OpenMP, PyTorch's
//! libtorch, ONNX Runtime builds, hand-written C). Left alone, such a kernel opens a team of one
//! thread per CPU of the machine in every stream, and the streams fight over the cores. This
//! module is the counterpart of the OpenMP part of Intel's runtime extension
//! (`is_runtime_ext_enabled`, the team binding of `Task` and `pin`):
//!
//! - **Finding the runtime.** At first use it looks for an OpenMP runtime that is *already
//!   loaded*: libiomp5 (Intel), libomp (LLVM) or libgomp (GCC), also under the renamed copies
//!   that Python wheels bundle (`libgomp-a34b3233.so.1`), and OpenMP linked into the program
//!   itself. Nothing is loaded that was not already there. [`load`] or the environment variable
//!   [`CORESTREAM_OMP_LIB`](LIB_ENV) (read once, at first use) load one explicitly. The symbols
//!   are resolved once for the whole process and the library is never unloaded. While nothing
//!   is found, each stream start looks again (cheaply: only when the set of loaded libraries
//!   changed), so a backend that loads its runtime late is picked up by the streams started
//!   after it; once found, the runtime is fixed for the process.
//! - **Stream threads.** Each stream thread, right after corestream pinned it, sets its OpenMP
//!   team size (`omp_set_num_threads`) to its CPU count and binds its team (see below). OpenMP
//!   keeps one team per thread that opens parallel regions, so every stream has its own.
//! - **[`pin`](crate::pin)** does the same for the calling thread and restores the team size
//!   and every team thread's mask afterwards.
//! - **No runtime:** everything works unchanged; the hooks do nothing.
//!
//! # How team threads are bound
//!
//! corestream opens one parallel region of `k` threads (k = the stream's CPU count) through the
//! runtime's `GOMP_parallel` entry point (libgomp's ABI, which libiomp5 and libomp export too),
//! with a Rust callback in which every team thread binds itself:
//!
//! | runtime | team thread `t` | the stream thread (team thread 0) |
//! |---|---|---|
//! | libiomp5, libomp | exactly `cpus[t]`, with `kmp_set_affinity` | exactly `cpus[0]` |
//! | libgomp | all of `cpus` | all of `cpus` |
//!
//! libiomp5 and libomp give their worker threads the full process mask when they start, so
//! without this a stream's team would run everywhere; binding thread `t` to CPU `t` is what
//! IPEX does, and the runtimes keep the same threads in the same positions for later regions of
//! the same size ("hot team"). libgomp has no per-thread affinity API: its team threads are
//! created by the stream thread and inherit its mask, and corestream confines any team threads
//! that existed before (as under [`pin`](crate::pin)) to the whole CPU set. If the kmp call is
//! refused (for example with `KMP_AFFINITY=disabled`), the thread is bound with
//! `sched_setaffinity` instead.
//!
//! corestream also makes sure a kmp runtime is initialised on the process's allowed CPUs (it
//! takes the initialising thread's mask as the set of CPUs it may ever use, and resets threads
//! to it when it first opens a region), so a stream started first cannot narrow the others.
//!
//! Limits: a region that asks for more threads than the stream's CPUs gets new threads that are
//! not bound (libiomp5, libomp) or bound like the master (libgomp), so keep the default team
//! size inside a model; OpenMP regions opened from a stream's rayon workers rather than from the
//! stream thread form teams of their own, which corestream does not bind (and libiomp5 may give
//! such a worker the full process mask); settings that make the runtime bind threads itself
//! (`KMP_AFFINITY=compact`, `OMP_PROC_BIND`, `OMP_PLACES`, `GOMP_CPU_AFFINITY`) compete with
//! corestream's binding and are best left unset; one runtime per process is controlled
//! (libiomp5 is preferred when several are loaded).
//!
//! ```
//! let status = corestream::omp::status();
//! match status.runtime {
//!     Some(runtime) => println!("OpenMP: {runtime} at {:?}", status.path),
//!     None => println!("no OpenMP runtime: OpenMP kernels are not confined"),
//! }
//! ```

#![warn(clippy::undocumented_unsafe_blocks)]
use std::ffi::{c_int, c_uint, c_void};
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, Once, OnceLock, PoisonError};

use libloading::Library;

use crate::affinity;
use crate::error::{Error, Result};

/// The environment variable naming an OpenMP runtime library to load, read once at the first
/// use of this module (a stream start, [`pin`](crate::pin), [`status`], [`detect`]) unless
/// [`load`] was called before.
///
/// ```
/// assert_eq!(corestream::omp::LIB_ENV, "CORESTREAM_OMP_LIB");
/// ```
pub const LIB_ENV: &str = "CORESTREAM_OMP_LIB";

/// An OpenMP runtime implementation.
///
/// ```
/// use corestream::omp::Runtime;
///
/// assert_eq!(Runtime::Intel.library_name(), "libiomp5");
/// assert_eq!(Runtime::Gnu.to_string(), "libgomp");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Runtime {
    /// Intel's libiomp5 (oneAPI, the `intel-openmp` wheel, MKL, IPEX).
    Intel,
    /// GCC's libgomp (`gcc -fopenmp`).
    Gnu,
    /// LLVM's libomp (`clang -fopenmp`; the same code base as libiomp5).
    Llvm,
}

impl Runtime {
    /// The library's usual name: `libiomp5`, `libgomp` or `libomp`.
    pub fn library_name(self) -> &'static str {
        match self {
            Runtime::Intel => "libiomp5",
            Runtime::Gnu => "libgomp",
            Runtime::Llvm => "libomp",
        }
    }

    /// The runtime a library file is, judged by its name (wheel-renamed copies included).
    fn from_file_name(path: &Path) -> Option<Runtime> {
        let name = path.file_name()?.to_str()?;
        let stem = name.split(".so").next()?;
        // auditwheel renames bundled libraries to `libgomp-a34b3233.so.1`.
        let stem = match stem.rsplit_once('-') {
            Some((base, hash))
                if !hash.is_empty() && hash.bytes().all(|b| b.is_ascii_hexdigit()) =>
            {
                base
            }
            _ => stem,
        };
        match stem {
            "libiomp5" => Some(Runtime::Intel),
            "libomp" => Some(Runtime::Llvm),
            "libgomp" => Some(Runtime::Gnu),
            _ => None,
        }
    }

    /// Preference when several runtimes are loaded: libiomp5 (it also serves libgomp's entry
    /// points when preloaded), then libomp, then libgomp.
    fn rank(self) -> u8 {
        match self {
            Runtime::Intel => 0,
            Runtime::Llvm => 1,
            Runtime::Gnu => 2,
        }
    }
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.library_name())
    }
}

/// Which OpenMP runtime corestream controls, and how (the anchor's `is_runtime_ext_enabled`).
///
/// ```
/// let status = corestream::omp::status();
/// if !status.is_enabled() {
///     assert_eq!(status.runtime, None);
///     assert!(!status.per_thread_binding);
/// }
/// println!("{status}");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OmpStatus {
    /// The runtime found or loaded; `None` when the process has none.
    pub runtime: Option<Runtime>,
    /// The library: as given to [`load`] or `CORESTREAM_OMP_LIB`, else the file the dynamic
    /// loader reports; `None` when unknown.
    pub path: Option<PathBuf>,
    /// Whether team threads are confined to a stream's CPUs (the runtime exports
    /// `GOMP_parallel`, which every runtime above does).
    pub team_binding: bool,
    /// Whether team thread `t` is bound to exactly the stream's CPU `t` (libiomp5 and libomp,
    /// through their `kmp_*` affinity API). With libgomp the team shares the stream's CPUs.
    pub per_thread_binding: bool,
}

impl OmpStatus {
    /// Whether an OpenMP runtime is under corestream's control.
    pub fn is_enabled(&self) -> bool {
        self.runtime.is_some()
    }

    fn none() -> OmpStatus {
        OmpStatus {
            runtime: None,
            path: None,
            team_binding: false,
            per_thread_binding: false,
        }
    }
}

impl fmt::Display for OmpStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(runtime) = self.runtime else {
            return f.write_str("no OpenMP runtime");
        };
        write!(f, "{runtime}")?;
        if let Some(path) = &self.path {
            write!(f, " ({})", path.display())?;
        }
        let binding = match (self.per_thread_binding, self.team_binding) {
            (true, _) => "team thread t on cpu t",
            (false, true) => "team confined to the stream's cpus",
            (false, false) => "team size only",
        };
        write!(f, ", binding: {binding}")
    }
}

/// The OpenMP runtime corestream controls, finding it first if needed (see the [module
/// docs](self)). Never fails: a bad [`CORESTREAM_OMP_LIB`](LIB_ENV) shows as no runtime here;
/// [`detect`] reports it.
///
/// ```
/// let status = corestream::omp::status();
/// println!("OpenMP: {status}");
/// ```
pub fn status() -> OmpStatus {
    detect().unwrap_or_else(|_| OmpStatus::none())
}

/// Like [`status`], but reports a bad [`CORESTREAM_OMP_LIB`](LIB_ENV).
///
/// ```
/// let status = corestream::omp::detect()?;
/// println!("OpenMP: {status}");
/// # Ok::<(), corestream::Error>(())
/// ```
///
/// # Errors
///
/// When `CORESTREAM_OMP_LIB` names a library that cannot be loaded
/// ([`Error::OmpLoad`]) or is not an OpenMP runtime ([`Error::OmpSymbols`]); stream starts
/// and [`pin`](crate::pin) fail with the same error then.
pub fn detect() -> Result<OmpStatus> {
    Ok(active()?.map_or_else(OmpStatus::none, Omp::status))
}

/// Loads the OpenMP runtime at `path` (a path, or a library name the dynamic loader searches
/// for) and puts it under corestream's control.
///
/// Load it before the library that uses it, or make sure it is the one that library uses: on
/// Unix, once accepted, it joins the global symbol scope (`RTLD_GLOBAL`), so libraries loaded
/// later resolve their OpenMP symbols to it, but libraries already loaded keep theirs (use
/// `LD_PRELOAD` for those). Calling it again with the runtime already in use is harmless; a
/// refused library is unloaded again.
///
/// ```
/// use corestream::{omp, Error};
///
/// match omp::load("/opt/intel/oneapi/compiler/latest/lib/libiomp5.so") {
///     Ok(status) => println!("OpenMP: {status}"),
///     Err(Error::OmpLoad { path, message }) => println!("not here: {} ({message})", path.display()),
///     Err(e) => return Err(e),
/// }
/// # Ok::<(), corestream::Error>(())
/// ```
///
/// # Errors
///
/// [`Error::OmpLoad`] when the file cannot be loaded (missing, not a shared library, wrong
/// architecture), [`Error::OmpSymbols`] when it is not an OpenMP runtime, and
/// [`Error::OmpConflict`] when a different runtime is already in use.
pub fn load(path: impl AsRef<Path>) -> Result<OmpStatus> {
    let path = path.as_ref();
    let lib = sys::open_new(path)?;
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
            sys::make_global(path);
            Ok(install(omp).status())
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Resolved runtime

type SetNumThreads = unsafe extern "C" fn(c_int);
type GetInt = unsafe extern "C" fn() -> c_int;
/// The outlined body of a parallel region: `void (*)(void *)`.
type Microtask = extern "C" fn(*mut c_void);
/// `void GOMP_parallel(void (*fn)(void *), void *data, unsigned num_threads, unsigned flags)`.
type GompParallel = unsafe extern "C" fn(Microtask, *mut c_void, c_uint, c_uint);
/// `kmp_affinity_mask_t` is `void *`.
type KmpMask = *mut c_void;
/// `kmp_create_affinity_mask`, `kmp_destroy_affinity_mask`.
type KmpMaskFn = unsafe extern "C" fn(*mut KmpMask);
/// `int kmp_set_affinity_mask_proc(int proc, kmp_affinity_mask_t *mask)`.
type KmpMaskProc = unsafe extern "C" fn(c_int, *mut KmpMask) -> c_int;
/// `int kmp_set_affinity(kmp_affinity_mask_t *mask)`.
type KmpSetAffinity = unsafe extern "C" fn(*mut KmpMask) -> c_int;

/// The kmp affinity API of libiomp5 and libomp. Each call acts on the calling thread.
struct Kmp {
    create_mask: KmpMaskFn,
    set_mask_proc: KmpMaskProc,
    set_affinity: KmpSetAffinity,
    destroy_mask: KmpMaskFn,
}

impl Kmp {
    /// Binds the calling thread to exactly `cpus` through the runtime, so that its own record
    /// of the thread's mask stays right.
    fn bind_current(&self, cpus: &[usize]) -> std::result::Result<(), String> {
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

/// An OpenMP runtime with its symbols resolved. Lives in [`ACTIVE`] for the rest of the
/// process once installed, so the function pointers never outlive the library.
struct Omp {
    runtime: Runtime,
    path: Option<PathBuf>,
    set_num_threads: SetNumThreads,
    get_max_threads: GetInt,
    get_thread_num: GetInt,
    parallel: Option<GompParallel>,
    kmp: Option<Kmp>,
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
    fn resolve(lib: Library, path: Option<PathBuf>, shown: &Path) -> Result<Omp> {
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
        let path = path.or_else(|| sys::library_path(get_max_threads as *const c_void));
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

    fn status(&self) -> OmpStatus {
        let team_binding =
            self.parallel.is_some() && (self.kmp.is_some() || cfg!(target_os = "linux"));
        OmpStatus {
            runtime: Some(self.runtime),
            path: self.path.clone(),
            team_binding,
            per_thread_binding: team_binding && self.kmp.is_some(),
        }
    }

    fn describe(&self) -> String {
        match &self.path {
            Some(path) => path.display().to_string(),
            None => self.runtime.to_string(),
        }
    }

    /// Whether both resolve to the same library (the same `omp_get_max_threads`).
    fn same_as(&self, other: &Omp) -> bool {
        self.get_max_threads as usize == other.get_max_threads as usize
    }

    /// Drops the resolved symbols but never unloads the library: an OpenMP runtime that may
    /// have been initialised is not safe to unload.
    fn keep_loaded(self) {
        std::mem::forget(self.lib);
    }

    fn max_threads(&self) -> c_int {
        // SAFETY: omp_get_max_threads has no preconditions.
        unsafe { (self.get_max_threads)() }
    }

    fn set_team_size(&self, threads: c_int) {
        // SAFETY: omp_set_num_threads accepts any value (non-positive ones are ignored or
        // reported by the runtime); it sets the calling thread's nthreads-var.
        unsafe { (self.set_num_threads)(threads.max(1)) }
    }

    /// kmp runtimes take the mask of the thread that initialises them as the set of CPUs they
    /// will ever bind to, and their full initialisation (at the first parallel region of the
    /// process) resets every registered thread to that mask. Initialise fully (if nobody did
    /// yet) on the process's allowed CPUs rather than on a stream's, then put the calling thread
    /// back.
    fn ensure_initialized(&self) {
        static INIT: Once = Once::new();
        if self.kmp.is_none() {
            return;
        }
        INIT.call_once(|| {
            let widened = (|| {
                let before = affinity::current_cpus().ok()?;
                let allowed = crate::topology::system().ok()?.allowed().to_vec();
                affinity::set_current_cpus(&allowed).ok()?;
                Some(before)
            })();
            self.max_threads();
            if let Some(parallel) = self.parallel {
                extern "C" fn nothing(_: *mut c_void) {}
                // SAFETY: `nothing` matches `void (*)(void *)` and ignores its (null) argument; a
                // one-thread region runs it on the calling thread only.
                unsafe { parallel(nothing, std::ptr::null_mut(), 1, 0) };
            }
            if let Some(before) = widened {
                let _ = affinity::set_current_cpus(&before);
            }
        });
    }

    /// Binds the calling thread to `cpus`: through the kmp API when there is one, falling back
    /// to (or else using) the kernel.
    fn bind_thread(&self, cpus: &[usize]) -> std::result::Result<(), String> {
        let kmp_error = match &self.kmp {
            Some(kmp) => match kmp.bind_current(cpus) {
                Ok(()) => return Ok(()),
                Err(e) => Some(e),
            },
            None => None,
        };
        affinity::set_current_cpus(cpus).map_err(|e| match kmp_error {
            Some(k) => format!("{k}; sched_setaffinity: {e}"),
            None => e.to_string(),
        })
    }

    /// What team thread `t` of a team on `cpus` is bound to.
    fn target<'c>(&self, cpus: &'c [usize], t: usize) -> &'c [usize] {
        if self.kmp.is_some() {
            cpus.get(t..=t).unwrap_or(cpus)
        } else {
            cpus
        }
    }

    /// Runs `work(t)` on every team thread `t` of a parallel region of `threads` threads opened
    /// by the calling thread (team thread 0). Returns each thread's result by `t` (`None` for
    /// threads the runtime did not start). Without `GOMP_parallel`, runs `work(0)` on the
    /// calling thread only.
    ///
    /// The master's work runs inside the region too, as in IPEX: libiomp5 may re-place a thread
    /// when it opens its first region, so binding before that would not last.
    fn on_team<R: Send + Sync>(
        &self,
        threads: usize,
        work: &(dyn Fn(usize) -> R + Sync),
    ) -> Vec<Option<R>> {
        let threads = threads.max(1);
        let slots: Vec<OnceLock<R>> = (0..threads).map(|_| OnceLock::new()).collect();
        if let Some(parallel) = self.parallel {
            let job = TeamJob {
                get_thread_num: self.get_thread_num,
                work: &|t| {
                    if let Some(slot) = slots.get(t) {
                        let _ = slot.set(work(t));
                    }
                },
            };
            let data = (&job as *const TeamJob<'_>).cast_mut().cast::<c_void>();
            let n = c_uint::try_from(threads).unwrap_or(c_uint::MAX);
            // SAFETY: `team_entry` matches GOMP_parallel's `void (*)(void *)`; `data` points at
            // `job`, which outlives the call because GOMP_parallel returns only after every
            // team thread has finished the region; `team_entry` never unwinds.
            unsafe { parallel(team_entry, data, n, 0) };
        } else {
            let _ = slots[0].set(work(0));
        }
        slots.into_iter().map(OnceLock::into_inner).collect()
    }

    /// Binds team threads `0..cpus.len()` (see [`Omp::target`]), recording the mask of each
    /// thread but the master first when `record`. Returns the recorded masks and the first
    /// binding error.
    #[allow(clippy::type_complexity)]
    fn bind_team(&self, cpus: &[usize], record: bool) -> (Vec<Option<Vec<usize>>>, Result<()>) {
        let results = self.on_team(cpus.len(), &|t| {
            let previous = if record && t > 0 {
                affinity::current_cpus().ok()
            } else {
                None
            };
            (previous, self.bind_thread(self.target(cpus, t)))
        });
        let mut masks = Vec::with_capacity(results.len());
        let mut outcome = Ok(());
        for (t, result) in results.into_iter().enumerate() {
            let (previous, bound) = result.unwrap_or((None, Ok(())));
            masks.push(previous);
            if let (Err(message), Ok(())) = (bound, &outcome) {
                outcome = Err(Error::OmpBind {
                    thread: t,
                    cpus: self.target(cpus, t).to_vec(),
                    message,
                });
            }
        }
        (masks, outcome)
    }

    /// Gives the calling thread (team thread 0) the mask `master` and team threads `t >= 1`
    /// the masks in `masks[t]`.
    fn restore_team(&self, master: &[usize], masks: &[Option<Vec<usize>>]) -> Result<()> {
        let target = |t: usize| match (t, masks.get(t)) {
            (0, _) => Some(master),
            (_, Some(Some(mask))) => Some(mask.as_slice()),
            _ => None,
        };
        let results = self.on_team(masks.len(), &|t| match target(t) {
            Some(mask) => self.bind_thread(mask),
            None => Ok(()),
        });
        for (t, result) in results.into_iter().enumerate() {
            if let Some(Err(message)) = result {
                return Err(Error::OmpBind {
                    thread: t,
                    cpus: target(t).unwrap_or_default().to_vec(),
                    message,
                });
            }
        }
        Ok(())
    }
}

/// What a parallel region's callback needs: read through the `void *` of `GOMP_parallel`.
struct TeamJob<'a> {
    get_thread_num: GetInt,
    work: &'a (dyn Fn(usize) + Sync),
}

/// The body of corestream's parallel regions, run by every team thread.
extern "C" fn team_entry(data: *mut c_void) {
    // SAFETY: `data` is the `&TeamJob` that `Omp::on_team` passed to GOMP_parallel, alive until
    // that call returns, which is after every team thread has left this function.
    let job = unsafe { &*data.cast_const().cast::<TeamJob<'_>>() };
    // SAFETY: omp_get_thread_num has no preconditions; inside a region it is the team index.
    let t = unsafe { (job.get_thread_num)() };
    if let Ok(t) = usize::try_from(t) {
        // A panic must not unwind into the runtime's C frames; the slot stays empty then.
        let _ = panic::catch_unwind(AssertUnwindSafe(|| (job.work)(t)));
    }
}

// ---------------------------------------------------------------------------------------------
// Process-wide state

/// The runtime in use, once found or loaded; fixed for the rest of the process.
static ACTIVE: OnceLock<Omp> = OnceLock::new();

/// Serialises finding and loading.
static SEARCH: Mutex<Search> = Mutex::new(Search {
    env_read: false,
    env_error: None,
    probed: None,
});

struct Search {
    /// Whether `CORESTREAM_OMP_LIB` was consulted (or made moot by [`load`]).
    env_read: bool,
    /// Why the library it names could not be used.
    env_error: Option<EnvError>,
    /// The loaded-library generation of the last probe that found nothing.
    probed: Option<sys::Generation>,
}

/// A bad `CORESTREAM_OMP_LIB`, kept to be reported at every use.
enum EnvError {
    Load { path: PathBuf, message: String },
    Symbols { path: PathBuf, symbol: String },
}

impl EnvError {
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

fn install(omp: Omp) -> &'static Omp {
    ACTIVE.get_or_init(|| omp)
}

/// The runtime to control, found at first use: `CORESTREAM_OMP_LIB`, else a runtime already
/// loaded in the process. `None` while there is none.
fn active() -> Result<Option<&'static Omp>> {
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
            match sys::open_new(&path).and_then(|lib| Omp::resolve(lib, Some(path.clone()), &path))
            {
                Ok(omp) => {
                    sys::make_global(&path);
                    return Ok(Some(install(omp)));
                }
                Err(e) => search.env_error = Some(EnvError::new(e, &path)),
            }
        }
    }
    if let Some(e) = &search.env_error {
        return Err(e.to_error());
    }
    let generation = sys::generation();
    if generation.is_some() && search.probed == generation {
        return Ok(None);
    }
    let mut found = sys::probe();
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

// ---------------------------------------------------------------------------------------------
// Hooks for streams and pin

/// Run by every stream thread right after corestream pinned it to `cpus`: sets its team size to
/// `cpus.len()` and binds its team (see the module docs). Does nothing without a runtime.
pub(crate) fn bind_stream(cpus: &[usize]) -> Result<()> {
    let Some(omp) = active()? else {
        return Ok(());
    };
    omp.ensure_initialized();
    omp.set_team_size(c_int::try_from(cpus.len()).unwrap_or(c_int::MAX));
    omp.bind_team(cpus, false).1
}

/// The OpenMP state of a thread before [`pin_team`], restored by [`SavedTeam::restore`].
#[derive(Debug)]
pub(crate) struct SavedTeam {
    omp: &'static Omp,
    max_threads: c_int,
    /// The masks of team threads `1..k` before binding (index = team thread).
    masks: Vec<Option<Vec<usize>>>,
}

/// For [`pin`](crate::pin): saves the calling thread's team size and team masks, then sets the
/// team size to `cpus.len()` and binds the team, the calling thread included. `None` without a
/// runtime (the caller binds the thread itself then). Call it before changing the calling
/// thread's mask, so that team threads created here start from the caller's old mask.
///
/// On error the team threads and the team size are restored and the calling thread is given
/// `previous` back.
pub(crate) fn pin_team(cpus: &[usize], previous: &[usize]) -> Result<Option<SavedTeam>> {
    let Some(omp) = active()? else {
        return Ok(None);
    };
    omp.ensure_initialized();
    let max_threads = omp.max_threads();
    let (masks, bound) = omp.bind_team(cpus, true);
    let saved = SavedTeam {
        omp,
        max_threads,
        masks,
    };
    match bound {
        Ok(()) => {
            omp.set_team_size(c_int::try_from(cpus.len()).unwrap_or(c_int::MAX));
            Ok(Some(saved))
        }
        Err(e) => {
            let _ = saved.restore(previous);
            Err(e)
        }
    }
}

impl SavedTeam {
    /// Restores the calling thread's mask (`master`), the team threads' masks and the team
    /// size.
    pub(crate) fn restore(self, master: &[usize]) -> Result<()> {
        let team = self.omp.restore_team(master, &self.masks);
        self.omp.set_team_size(self.max_threads);
        team
    }
}

// ---------------------------------------------------------------------------------------------
// Platform: loading, finding loaded libraries

#[cfg(target_os = "linux")]
mod sys {
    use std::ffi::{c_int, c_void, CStr, OsStr};
    use std::mem::MaybeUninit;
    use std::os::unix::ffi::OsStrExt;
    use std::path::{Path, PathBuf};

    use libloading::os::unix::{Library as UnixLibrary, RTLD_GLOBAL, RTLD_LOCAL, RTLD_NOW};
    use libloading::Library;

    use super::{Omp, Runtime};
    use crate::error::{Error, Result};

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
    pub(super) fn open_new(path: &Path) -> Result<Library> {
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
    pub(super) fn make_global(path: &Path) {
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

    /// Every OpenMP runtime already loaded: the well-known names, renamed copies among the
    /// loaded objects, and one linked into the program's global scope.
    pub(super) fn probe() -> Vec<Omp> {
        fn consider(found: &mut Vec<Omp>, lib: Library, shown: &Path) {
            if let Ok(omp) = Omp::resolve(lib, None, shown) {
                if found.iter().any(|f| f.same_as(&omp)) {
                    omp.keep_loaded();
                } else {
                    found.push(omp);
                }
            }
        }
        let mut found = Vec::new();
        for name in WELL_KNOWN {
            if let Some(lib) = open_loaded(OsStr::new(name)) {
                consider(&mut found, lib, Path::new(name));
            }
        }
        for path in loaded_objects() {
            if Runtime::from_file_name(&path).is_some() {
                if let Some(lib) = open_loaded(path.as_os_str()) {
                    consider(&mut found, lib, &path);
                }
            }
        }
        if found.is_empty() {
            // Statically linked into the program, or loaded with RTLD_GLOBAL under another
            // name: the global scope has the symbols.
            let this = Library::from(UnixLibrary::this());
            consider(&mut found, this, Path::new("<global symbol scope>"));
        }
        found
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
    pub(super) type Generation = (libc::c_ulonglong, libc::c_ulonglong);

    /// The current [`Generation`]: unchanged means there is nothing new to find.
    pub(super) fn generation() -> Option<Generation> {
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
    pub(super) fn library_path(addr: *const c_void) -> Option<PathBuf> {
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
mod sys {
    use std::ffi::c_void;
    use std::path::{Path, PathBuf};

    use libloading::Library;

    use super::Omp;
    use crate::error::{Error, Result};

    pub(super) fn open_new(path: &Path) -> Result<Library> {
        // SAFETY: loading runs the library's initialisers. The caller named this library as an
        // OpenMP runtime, whose initialisers only set up the runtime.
        unsafe { Library::new(path) }.map_err(|e| Error::OmpLoad {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    /// Finding an already-loaded runtime is implemented for Linux only.
    pub(super) fn make_global(_path: &Path) {}

    pub(super) fn probe() -> Vec<Omp> {
        Vec::new()
    }

    pub(super) type Generation = ();

    pub(super) fn generation() -> Option<Generation> {
        None
    }

    pub(super) fn library_path(_addr: *const c_void) -> Option<PathBuf> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtimes_are_recognised_by_file_name() {
        let of = |name: &str| Runtime::from_file_name(Path::new(name));
        assert_eq!(
            of("/usr/lib/x86_64-linux-gnu/libgomp.so.1"),
            Some(Runtime::Gnu)
        );
        assert_eq!(of("torch/lib/libgomp-a34b3233.so.1"), Some(Runtime::Gnu));
        assert_eq!(of("/opt/intel/lib/libiomp5.so"), Some(Runtime::Intel));
        assert_eq!(of("libomp.so.5"), Some(Runtime::Llvm));
        assert_eq!(of("libomptarget.so"), None);
        assert_eq!(of("libm.so.6"), None);
        assert_eq!(of("libgomp-plugin-nvptx.so.1"), None);
    }

    #[test]
    fn status_display_names_the_binding() {
        assert_eq!(OmpStatus::none().to_string(), "no OpenMP runtime");
        let status = OmpStatus {
            runtime: Some(Runtime::Intel),
            path: Some("/x/libiomp5.so".into()),
            team_binding: true,
            per_thread_binding: true,
        };
        assert_eq!(
            status.to_string(),
            "libiomp5 (/x/libiomp5.so), binding: team thread t on cpu t"
        );
    }
}
