//! OpenMP control (`corestream::omp`): finding and loading a runtime, the stream threads' teams,
//! `pin`, and bad libraries.
//!
//! The OpenMP "kernel" is tests/omp/teaminfo.c, built here at test time with `-fopenmp`: it runs
//! a parallel region and reports the team size and each team thread's CPU mask. Which runtime a
//! process has is process-wide state, so most tests re-run the test binary on themselves
//! (`--exact NAME`) and check the outcome in a fresh process.
//!
//! The libiomp5 test needs `CORESTREAM_TEST_IOMP=/path/to/libiomp5.so` (.ci/run installs the
//! intel-openmp wheel and sets it); without it the test prints a note and passes, except with
//! `CI=true`, where it fails.
#![cfg(target_os = "linux")]

use std::ffi::{c_int, OsString};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use corestream::affinity::{current_cpus, set_current_cpus};
use corestream::omp::{self, Runtime};
use corestream::{module_fn, pin, CpuPool, Error, Task};

/// Set in a re-executed test binary: the name of the test it runs.
const CHILD: &str = "CORESTREAM_OMP_TEST_CHILD";
/// Set in a re-executed test binary: the teaminfo library the parent built.
const TEAMINFO: &str = "CORESTREAM_OMP_TEST_TEAMINFO";
/// Path of libiomp5.so, set by .ci/run.
const IOMP: &str = "CORESTREAM_TEST_IOMP";

// ---------------------------------------------------------------------------------------------
// Helpers

/// `true` inside the process that runs test `name`; otherwise runs the test binary on `name`
/// alone in a new process with `env` added, fails if that fails, and returns `false`.
fn in_own_process(name: &str, env: &[(&str, OsString)]) -> bool {
    if std::env::var(CHILD).as_deref() == Ok(name) {
        return true;
    }
    let out = Command::new(std::env::current_exe().expect("test binary"))
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env_remove(omp::LIB_ENV)
        .env(CHILD, name)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("re-run the test binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{name} failed in its own process ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("1 passed"),
        "{name} ran no test in its own process:\n{stdout}\n{stderr}"
    );
    false
}

/// Where the test libraries are built: cargo's scratch directory for integration tests.
fn scratch() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("omp");
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// Builds tests/omp/teaminfo.c into `name` in the scratch directory: linked to libgomp, or to
/// the libiomp5 at `iomp`. Built under a private name and renamed, so that test processes
/// building at the same time do not see each other's half-written files.
fn build_teaminfo(name: &str, iomp: Option<&Path>) -> PathBuf {
    let dir = scratch();
    let work = dir.join(format!("build-{name}-{}", std::process::id()));
    let target = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    let mut build = cc::Build::new();
    build
        .target(&target)
        .host(&target)
        .opt_level(1)
        .debug(false)
        .pic(true)
        .cargo_metadata(false)
        .cargo_warnings(false)
        .out_dir(&work)
        .flag("-fopenmp")
        .file(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/omp/teaminfo.c"));
    let objects = build
        .try_compile_intermediates()
        .expect("compile teaminfo.c with -fopenmp (gcc with OpenMP support)");
    let partial = work.join(name);
    let mut link = Command::new(build.get_compiler().path());
    link.arg("-shared").arg("-o").arg(&partial).args(&objects);
    match iomp {
        // gcc's OpenMP code calls the GOMP_* entry points, which libiomp5 implements too.
        Some(iomp) => link.arg(iomp).arg(format!(
            "-Wl,-rpath,{}",
            iomp.parent().expect("libiomp5 directory").display()
        )),
        None => link.arg("-fopenmp"),
    };
    let status = link.status().expect("run the linker");
    assert!(status.success(), "linking {name} failed: {link:?}");
    let out = dir.join(name);
    std::fs::rename(&partial, &out).expect("move the library into place");
    let _ = std::fs::remove_dir_all(&work);
    out
}

/// The libgomp teaminfo library: built once by the parent process, handed to children.
fn teaminfo_gomp_path() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| match std::env::var_os(TEAMINFO) {
        Some(path) => PathBuf::from(path),
        None => build_teaminfo("libteaminfo-gomp.so", None),
    })
    .clone()
}

/// The child environment that hands over the libgomp teaminfo library.
fn gomp_env() -> Vec<(&'static str, OsString)> {
    vec![(TEAMINFO, teaminfo_gomp_path().into_os_string())]
}

/// The teaminfo library, loaded.
struct TeamInfo {
    _lib: libloading::Library,
    run: unsafe extern "C" fn(c_int, *mut u64) -> c_int,
    max_threads: unsafe extern "C" fn() -> c_int,
    set_num_threads: unsafe extern "C" fn(c_int),
    words: usize,
}

/// What one parallel region saw.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Team {
    size: usize,
    /// The CPUs of team thread `t`, ascending.
    masks: Vec<Vec<usize>>,
}

impl TeamInfo {
    fn open(path: &Path) -> TeamInfo {
        // SAFETY: teaminfo's initialisers are those of an ordinary C library (and of the
        // OpenMP runtime it links); the symbol types match tests/omp/teaminfo.c.
        unsafe {
            let lib = libloading::Library::new(path).expect("load teaminfo");
            let words: unsafe extern "C" fn() -> c_int = *lib.get(b"teaminfo_words").unwrap();
            TeamInfo {
                run: *lib.get(b"teaminfo").unwrap(),
                max_threads: *lib.get(b"teaminfo_max_threads").unwrap(),
                set_num_threads: *lib.get(b"teaminfo_set_num_threads").unwrap(),
                words: usize::try_from(words()).unwrap(),
                _lib: lib,
            }
        }
    }

    /// One parallel region with the calling thread's default team size.
    fn team(&self) -> Team {
        const CAP: usize = 256;
        let mut raw = vec![0u64; CAP * self.words];
        // SAFETY: `raw` has room for CAP rows of `words` words, as teaminfo requires.
        let size = unsafe { (self.run)(CAP as c_int, raw.as_mut_ptr()) };
        let size = usize::try_from(size).unwrap();
        let masks = raw
            .chunks(self.words)
            .take(size.min(CAP))
            .map(|row| {
                (0..self.words * 64)
                    .filter(|&cpu| row[cpu / 64] >> (cpu % 64) & 1 == 1)
                    .collect()
            })
            .collect();
        Team { size, masks }
    }

    fn max_threads(&self) -> usize {
        // SAFETY: omp_get_max_threads has no preconditions.
        usize::try_from(unsafe { (self.max_threads)() }).unwrap()
    }

    fn set_num_threads(&self, n: usize) {
        // SAFETY: omp_set_num_threads has no preconditions.
        unsafe { (self.set_num_threads)(c_int::try_from(n).unwrap()) }
    }
}

/// The teaminfo library of this process (libgomp unless `path` says otherwise), loaded once.
fn teaminfo(path: impl FnOnce() -> PathBuf) -> &'static TeamInfo {
    static LIB: OnceLock<TeamInfo> = OnceLock::new();
    LIB.get_or_init(|| TeamInfo::open(&path()))
}

fn all() -> CpuPool {
    CpuPool::all().expect("pool of all cpus")
}

/// Pools to run streams on: the first CPU, the last CPU, and all of them (fewer on 1 CPU).
fn pools() -> Vec<CpuPool> {
    let all = all();
    let mut pools = vec![CpuPool::new([all.cpus()[0]]).unwrap()];
    if all.len() > 1 {
        pools.push(CpuPool::new([*all.cpus().last().unwrap()]).unwrap());
        pools.push(all);
    }
    pools
}

/// A stream on `pool` whose requests run one teaminfo region (with the stream thread's default
/// team size) and report it with the default team size.
fn teaminfo_task(
    lib: &'static TeamInfo,
    pool: &CpuPool,
) -> Task<impl corestream::Module<Input = (), Output = (Team, usize)>> {
    Task::new(
        module_fn(move |()| Ok((lib.team(), lib.max_threads()))),
        pool.clone(),
    )
    .expect("start a stream")
}

/// What a stream on `pool` sees; asked twice, it must see the same (the team is kept).
fn team_in_stream(lib: &'static TeamInfo, pool: &CpuPool) -> (Team, usize) {
    let task = teaminfo_task(lib, pool);
    let first = task.run_sync(()).expect("teaminfo in the stream");
    let again = task.run_sync(()).expect("teaminfo in the stream");
    assert_eq!(first, again, "{pool}: a later region");
    first
}

fn sorted(cpus: &[usize]) -> Vec<usize> {
    let mut cpus = cpus.to_vec();
    cpus.sort_unstable();
    cpus
}

/// Whether a library whose file name starts with `prefix` is mapped into this process.
fn mapped(prefix: &str) -> bool {
    std::fs::read_to_string("/proc/self/maps")
        .expect("/proc/self/maps")
        .lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .any(|path| {
            Path::new(path)
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
        })
}

// ---------------------------------------------------------------------------------------------
// Without a runtime

#[test]
fn without_a_runtime_everything_works_unchanged() {
    if !in_own_process("without_a_runtime_everything_works_unchanged", &[]) {
        return;
    }
    let status = omp::status();
    assert!(!status.is_enabled(), "{status}");
    assert_eq!(status.runtime, None);
    assert!(!status.team_binding && !status.per_thread_binding);
    assert_eq!(omp::detect().unwrap(), status);

    let all = all();
    let task = Task::new(module_fn(|()| Ok(current_cpus()?)), all.clone()).unwrap();
    assert_eq!(task.run_sync(()).unwrap(), sorted(all.cpus()));

    let before = current_cpus().unwrap();
    let first = CpuPool::new([all.cpus()[0]]).unwrap();
    assert_eq!(pin(&first, current_cpus).unwrap().unwrap(), first.cpus());
    assert_eq!(current_cpus().unwrap(), before);
    assert!(!omp::status().is_enabled());
}

// ---------------------------------------------------------------------------------------------
// libgomp

#[test]
fn libgomp_is_found_once_a_library_loads_it() {
    if !in_own_process("libgomp_is_found_once_a_library_loads_it", &gomp_env()) {
        return;
    }
    assert!(!omp::status().is_enabled());
    teaminfo(teaminfo_gomp_path);
    let status = omp::status();
    assert_eq!(status.runtime, Some(Runtime::Gnu), "{status}");
    let path = status.path.clone().expect("the library's path");
    assert!(
        path.to_string_lossy().contains("libgomp"),
        "{}",
        path.display()
    );
    assert!(
        status.team_binding && !status.per_thread_binding,
        "{status}"
    );
    // Loading the runtime already in use is harmless.
    assert_eq!(omp::load(&path).unwrap(), status);
}

#[test]
fn libgomp_stream_teams_have_the_stream_size_and_cpus() {
    if !in_own_process(
        "libgomp_stream_teams_have_the_stream_size_and_cpus",
        &gomp_env(),
    ) {
        return;
    }
    let lib = teaminfo(teaminfo_gomp_path);
    let own = lib.team();
    for pool in pools() {
        let (team, max_threads) = team_in_stream(lib, &pool);
        assert_eq!(team.size, pool.len(), "{pool}: {team:?}");
        assert_eq!(max_threads, pool.len(), "{pool}");
        assert_eq!(
            team.masks[0],
            sorted(pool.cpus()),
            "{pool}: the stream thread"
        );
        for (t, mask) in team.masks.iter().enumerate() {
            assert!(
                !mask.is_empty() && mask.iter().all(|c| pool.cpus().contains(c)),
                "{pool}: team thread {t} on {mask:?}"
            );
        }
    }
    // The streams' settings stay on the stream threads.
    assert_eq!(lib.team(), own);
    assert_eq!(omp::status().runtime, Some(Runtime::Gnu));
}

#[test]
fn libgomp_pin_sets_and_restores_team_size_and_masks() {
    if !in_own_process(
        "libgomp_pin_sets_and_restores_team_size_and_masks",
        &gomp_env(),
    ) {
        return;
    }
    let lib = teaminfo(teaminfo_gomp_path);
    let all = all();
    let last = *all.cpus().last().unwrap();
    // A team whose threads were created on the last CPU only: pin must confine them to the
    // pool, then give them their mask back.
    let mask = current_cpus().unwrap();
    set_current_cpus(&[last]).unwrap();
    lib.set_num_threads(all.len());
    lib.team();
    set_current_cpus(&mask).unwrap();
    let before = lib.team();
    assert_eq!(before.size, all.len());
    assert!(before.masks[1..].iter().all(|m| m == &[last]), "{before:?}");
    let threads = lib.max_threads();

    for pool in pools() {
        let (inside, max_threads) = pin(&pool, || (lib.team(), lib.max_threads())).unwrap();
        assert_eq!(inside.size, pool.len(), "{pool}: {inside:?}");
        assert_eq!(max_threads, pool.len());
        for (t, mask) in inside.masks.iter().enumerate() {
            assert_eq!(mask, &sorted(pool.cpus()), "{pool}: team thread {t}");
        }
        assert_eq!(lib.team(), before, "after pin({pool})");
        assert_eq!(lib.max_threads(), threads);
        assert_eq!(current_cpus().unwrap(), mask);
    }

    // Nested pins restore level by level.
    let first = CpuPool::new([all.cpus()[0]]).unwrap();
    let (inner, outer) = pin(&all, || {
        let inner = pin(&first, || lib.team()).unwrap();
        (inner, lib.team())
    })
    .unwrap();
    assert_eq!(inner.size, 1);
    assert_eq!(inner.masks[0], [all.cpus()[0]]);
    assert_eq!(outer.size, all.len());
    assert!(
        outer.masks.iter().all(|m| m == &sorted(all.cpus())),
        "{outer:?}"
    );
    assert_eq!(lib.team(), before);

    // A guard dropped without `restore` restores too.
    {
        let _guard = first.pin_current().unwrap();
        assert_eq!(lib.team().size, 1);
    }
    assert_eq!(lib.team(), before);
}

#[test]
fn corestream_omp_lib_names_the_runtime_at_first_use() {
    if !in_own_process(
        "corestream_omp_lib_names_the_runtime_at_first_use",
        &[(omp::LIB_ENV, "libgomp.so.1".into()), gomp_env().remove(0)],
    ) {
        return;
    }
    let status = omp::detect().unwrap();
    assert_eq!(status.runtime, Some(Runtime::Gnu), "{status}");
    assert_eq!(status.path.as_deref(), Some(Path::new("libgomp.so.1")));
    let lib = teaminfo(teaminfo_gomp_path);
    let pool = all();
    let (team, _) = team_in_stream(lib, &pool);
    assert_eq!(team.size, pool.len());
}

#[test]
fn a_bad_corestream_omp_lib_fails_streams_and_pin_until_load() {
    let text = scratch().join("not-a-library.txt");
    std::fs::write(&text, "this is not a shared library\n").unwrap();
    if !in_own_process(
        "a_bad_corestream_omp_lib_fails_streams_and_pin_until_load",
        &[
            (omp::LIB_ENV, text.clone().into_os_string()),
            gomp_env().remove(0),
        ],
    ) {
        return;
    }
    assert!(
        matches!(omp::detect(), Err(Error::OmpLoad { ref path, .. }) if *path == text),
        "{:?}",
        omp::detect()
    );
    assert!(!omp::status().is_enabled());
    let pool = all();
    let err = Task::new(module_fn(|()| Ok(())), pool.clone()).err();
    assert!(matches!(err, Some(Error::OmpLoad { .. })), "{err:?}");
    let before = current_cpus().unwrap();
    let err = pin(&pool, || ()).unwrap_err();
    assert!(matches!(err, Error::OmpLoad { .. }), "{err:?}");
    assert!(err.to_string().contains(omp::LIB_ENV), "{err}");
    assert_eq!(current_cpus().unwrap(), before);

    // An explicit load replaces the bad setting.
    let status = omp::load("libgomp.so.1").unwrap();
    assert_eq!(status.runtime, Some(Runtime::Gnu));
    let lib = teaminfo(teaminfo_gomp_path);
    let (team, _) = team_in_stream(lib, &pool);
    assert_eq!(team.size, pool.len());
}

#[test]
fn a_second_runtime_is_refused() {
    if !in_own_process("a_second_runtime_is_refused", &gomp_env()) {
        return;
    }
    teaminfo(teaminfo_gomp_path);
    let active = omp::status().path.expect("libgomp's path");
    // A copy is a different library to the loader: a second OpenMP runtime.
    let copy = scratch().join(format!("libgomp-copy-{}.so.1", std::process::id()));
    std::fs::copy(&active, &copy).unwrap();
    let err = omp::load(&copy).unwrap_err();
    let _ = std::fs::remove_file(&copy);
    match &err {
        Error::OmpConflict {
            active: a,
            requested,
        } => {
            assert_eq!(a, &active.display().to_string());
            assert_eq!(requested, &copy);
        }
        other => panic!("expected OmpConflict, got {other:?}"),
    }
    assert!(err.to_string().contains("one runtime"), "{err}");
    assert_eq!(omp::status().path.as_deref(), Some(active.as_path()));
}

// ---------------------------------------------------------------------------------------------
// Bad libraries (no runtime is put in use, so these run in the test process itself)

#[test]
fn a_file_that_is_not_a_library_is_a_load_error() {
    let text = scratch().join("readme-not-a-library.txt");
    std::fs::write(&text, "plain text\n").unwrap();
    let err = omp::load(&text).unwrap_err();
    match &err {
        Error::OmpLoad { path, message } => {
            assert_eq!(path, &text);
            assert!(!message.is_empty());
        }
        other => panic!("expected OmpLoad, got {other:?}"),
    }
    assert!(
        err.to_string().contains("expected a shared library"),
        "{err}"
    );

    let missing = scratch().join("no-such-dir/libiomp5.so");
    assert!(matches!(omp::load(&missing), Err(Error::OmpLoad { path, .. }) if path == missing));
}

#[test]
fn a_library_without_the_openmp_symbols_is_a_symbols_error() {
    for name in ["libm.so.6", "libc.so.6"] {
        let err = omp::load(name).unwrap_err();
        match &err {
            Error::OmpSymbols { path, symbol } => {
                assert_eq!(path, Path::new(name));
                assert_eq!(symbol, "omp_set_num_threads");
            }
            other => panic!("{name}: expected OmpSymbols, got {other:?}"),
        }
        assert!(err.to_string().contains("expected libiomp5"), "{err}");
    }
}

// ---------------------------------------------------------------------------------------------
// libiomp5

/// libiomp5's path from `CORESTREAM_TEST_IOMP`: required in CI, optional elsewhere.
fn iomp_path() -> Option<PathBuf> {
    match std::env::var_os(IOMP) {
        Some(path) => {
            let path = PathBuf::from(path);
            assert!(
                path.is_file(),
                "{IOMP}={} does not exist: run the intel-openmp install step of .ci/run",
                path.display()
            );
            Some(path)
        }
        None if std::env::var("CI").is_ok_and(|ci| ci == "true") => {
            panic!("CI=true but {IOMP} is not set: .ci/run installs the intel-openmp wheel and exports it")
        }
        None => {
            eprintln!(
                "note: {IOMP} is not set; the libiomp5 test is skipped (see .ci/run for the install step)"
            );
            None
        }
    }
}

#[test]
fn libiomp5_binds_team_thread_t_to_the_streams_cpu_t() {
    const NAME: &str = "libiomp5_binds_team_thread_t_to_the_streams_cpu_t";
    let iomp = if std::env::var(CHILD).as_deref() == Ok(NAME) {
        PathBuf::from(std::env::var_os(IOMP).expect("set by the parent"))
    } else {
        let Some(iomp) = iomp_path() else { return };
        let lib = build_teaminfo("libteaminfo-iomp5.so", Some(&iomp));
        in_own_process(NAME, &[(IOMP, iomp.into()), (TEAMINFO, lib.into())]);
        return;
    };
    // libiomp5 alone: loaded explicitly first, then a kernel linked against it.
    let status = omp::load(&iomp).unwrap();
    assert_eq!(status.runtime, Some(Runtime::Intel), "{status}");
    assert!(status.team_binding && status.per_thread_binding, "{status}");
    assert_eq!(status.path.as_deref(), Some(iomp.as_path()));
    let lib = teaminfo(|| PathBuf::from(std::env::var_os(TEAMINFO).unwrap()));
    assert!(
        !mapped("libgomp"),
        "libgomp must not be in the libiomp5 process"
    );

    // The last CPU first: the runtime's first use is on a thread pinned to one CPU, and the
    // later streams must still be able to use the others.
    let mut pools = pools();
    let shift = usize::from(pools.len() > 1);
    pools.rotate_left(shift);
    for pool in pools {
        let (team, max_threads) = team_in_stream(lib, &pool);
        assert_eq!(team.size, pool.len(), "{pool}: {team:?}");
        assert_eq!(max_threads, pool.len());
        for (t, mask) in team.masks.iter().enumerate() {
            assert_eq!(mask, &[pool.cpus()[t]], "{pool}: team thread {t}");
        }
    }

    // Streams side by side, one per CPU, each with its own team.
    let all = all();
    let tasks: Vec<_> = all
        .split(all.len())
        .unwrap()
        .into_iter()
        .map(|pool| (teaminfo_task(lib, &pool), pool))
        .collect();
    for _ in 0..3 {
        let futures: Vec<_> = tasks.iter().map(|(task, _)| task.submit(())).collect();
        for (future, (_, pool)) in futures.into_iter().zip(&tasks) {
            let (team, _) = future.wait().unwrap();
            assert_eq!(team.masks, [pool.cpus().to_vec()], "{pool}");
        }
    }
    drop(tasks);

    // pin: team thread t on cpu t inside, everything as before afterwards.
    let before = lib.team();
    let mask = current_cpus().unwrap();
    let threads = lib.max_threads();
    let (inside, max_threads) = pin(&all, || (lib.team(), lib.max_threads())).unwrap();
    assert_eq!(inside.size, all.len(), "{inside:?}");
    assert_eq!(max_threads, all.len());
    for (t, m) in inside.masks.iter().enumerate() {
        assert_eq!(m, &[all.cpus()[t]], "team thread {t} under pin");
    }
    assert_eq!(lib.team(), before);
    assert_eq!(lib.max_threads(), threads);
    assert_eq!(current_cpus().unwrap(), mask);
}
