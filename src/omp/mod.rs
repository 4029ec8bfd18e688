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
//!
//! # Source layout and unsafe boundaries
//!
//! This file is the public API ([`status`], [`detect`], [`load`], [`Runtime`], [`OmpStatus`],
//! [`LIB_ENV`]) and holds no `unsafe`. The rest is private, one concept per file; each of the
//! three unsafe boundaries lives in exactly one of them:
//!
//! - `symbols.rs`: the resolved runtime (`Omp`), its function pointers and the kmp affinity
//!   API. *Unsafe boundary:* resolving symbols to typed function pointers and calling them.
//! - `team.rs`: binding a thread's OpenMP team, and the hooks for stream threads and
//!   [`pin`](crate::pin). *Unsafe boundary:* opening parallel regions through `GOMP_parallel`
//!   with a Rust callback that receives its data as a `void *`.
//! - `platform.rs`: the dynamic loader (loading a library, finding the loaded ones, naming the
//!   file of a symbol). *Unsafe boundary:* `dlopen`, `dl_iterate_phdr` and `dladdr`.
//! - `search.rs`: the process-wide state (the runtime in use, `CORESTREAM_OMP_LIB`, re-probing
//!   when libraries were loaded). No `unsafe`.
//!
//! The invariant they share: a resolved runtime (`Omp`) is installed for the rest of the
//! process, or given up with its library kept loaded (`Omp::keep_loaded`), or, never having been
//! called, dropped with its library; so no function pointer outlives its library, and no runtime
//! that may have been initialised is unloaded.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::Result;

mod platform;
mod search;
mod symbols;
mod team;

pub(crate) use team::{bind_stream, pin_team, SavedTeam};

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

// ===== impl Runtime =====

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

/// Which OpenMP runtime corestream controls, and how (IPEX's `is_runtime_ext_enabled`).
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

// ===== impl OmpStatus =====

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
///
/// [`Error::OmpLoad`]: crate::Error::OmpLoad
/// [`Error::OmpSymbols`]: crate::Error::OmpSymbols
pub fn detect() -> Result<OmpStatus> {
    search::detect()
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
///
/// [`Error::OmpLoad`]: crate::Error::OmpLoad
/// [`Error::OmpSymbols`]: crate::Error::OmpSymbols
/// [`Error::OmpConflict`]: crate::Error::OmpConflict
pub fn load(path: impl AsRef<Path>) -> Result<OmpStatus> {
    search::load(path.as_ref())
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
