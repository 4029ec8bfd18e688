//! [`Streams`]: how many streams a [`MultiStreamModule`](super::MultiStreamModule) runs.

#[cfg(doc)]
use super::MultiStreamModule;
#[cfg(doc)]
use crate::pool::CpuPool;

/// How many streams a [`MultiStreamModule`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Streams {
    /// One stream per CPU of the pool (IPEX's `"AUTO"`), but no more than the process's CPU
    /// quota pays for (a cgroup `cpu.max`, Kubernetes' CPU limit; see [`crate::quota`]): under
    /// a quota of `q` CPUs, `ceil(q)` one-CPU streams on the pool's first CPUs, so that no
    /// more threads are busy than the quota pays for (see [`Streams::auto_count`]).
    #[default]
    Auto,
    /// Exactly this many streams; the pool's CPUs are shared out with [`CpuPool::split`].
    Count(usize),
}

impl Streams {
    /// How many streams [`Streams::Auto`] runs on a pool of `cpus` CPUs under `quota`: `cpus`,
    /// or fewer, `quota.whole_cpus()`, when the quota pays for fewer.
    ///
    /// ```
    /// use corestream::quota::CpuQuota;
    /// use corestream::Streams;
    ///
    /// let limit = |cpus: f64| CpuQuota {
    ///     quota_us: (cpus * 100_000.0) as u64,
    ///     period_us: 100_000,
    ///     source: "cpu.max".into(),
    /// };
    /// assert_eq!(Streams::auto_count(16, None), 16);
    /// assert_eq!(Streams::auto_count(16, Some(&limit(2.5))), 3); // 2.5 CPUs: 3 streams
    /// assert_eq!(Streams::auto_count(2, Some(&limit(8.0))), 2); // the pool bounds it too
    /// assert_eq!(Streams::auto_count(4, Some(&limit(0.2))), 1);
    /// ```
    pub fn auto_count(cpus: usize, quota: Option<&crate::quota::CpuQuota>) -> usize {
        quota.map_or(cpus, |q| cpus.min(q.whole_cpus())).max(1)
    }
}

/// Parses `auto` (any case) or a positive count; the one parser of a stream count, used by the
/// `corestream` command and the embedding service alike.
///
/// ```
/// use corestream::Streams;
///
/// assert_eq!("auto".parse::<Streams>()?, Streams::Auto);
/// assert_eq!(" 4 ".parse::<Streams>()?, Streams::Count(4));
/// assert!("0".parse::<Streams>().is_err());
/// assert!("two".parse::<Streams>().is_err());
/// assert_eq!(Streams::Count(3).to_string(), "3");
/// # Ok::<(), corestream::Error>(())
/// ```
impl std::str::FromStr for Streams {
    type Err = crate::Error;

    fn from_str(text: &str) -> crate::Result<Streams> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("auto") {
            return Ok(Streams::Auto);
        }
        match text.parse::<usize>() {
            Ok(n) if n > 0 => Ok(Streams::Count(n)),
            _ => Err(crate::Error::InvalidConfig(format!(
                "streams {text:?}: expected `auto` or a positive number"
            ))),
        }
    }
}

/// `auto` or the count, as [`FromStr`](std::str::FromStr) reads it.
impl std::fmt::Display for Streams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Streams::Auto => f.write_str("auto"),
            Streams::Count(n) => write!(f, "{n}"),
        }
    }
}
