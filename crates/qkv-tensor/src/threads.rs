//! One rayon thread pool for everything: GEMM, element-wise loops, attention.

/// The environment variable that sets the thread count when no explicit
/// count is given.
pub const THREADS_ENV: &str = "QKV_THREADS";

/// The most threads the pool takes: each is an OS thread with its own stack,
/// and far more than there are cores only makes the kernels slower.
pub const MAX_THREADS: usize = 1024;

/// Size the global pool: `requested`, else `$QKV_THREADS`, else every core.
/// The pool can be built once per process; later calls return its size and
/// fail only if they ask for a different explicit size.
pub fn init_threads(requested: Option<usize>) -> Result<usize, String> {
    let from_env = match std::env::var(THREADS_ENV) {
        Ok(s) if !s.trim().is_empty() => {
            Some(s.trim().parse::<usize>().map_err(|_| format!("{THREADS_ENV}={s:?} is not a number of threads"))?)
        }
        _ => None,
    };
    let n =
        requested.or(from_env).unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    if n == 0 {
        return Err("the number of threads must be at least 1".into());
    }
    if n > MAX_THREADS {
        return Err(format!("{n} threads: qkv starts at most {MAX_THREADS} (one per core is the fastest)"));
    }
    match rayon::ThreadPoolBuilder::new().num_threads(n).build_global() {
        Ok(()) => Ok(n),
        Err(_) => {
            let current = rayon::current_num_threads();
            if requested.is_some_and(|r| r != current) {
                Err(format!("the thread pool already runs {current} threads; cannot change it to {n}"))
            } else {
                Ok(current)
            }
        }
    }
}

/// Threads in the pool.
pub fn num_threads() -> usize {
    rayon::current_num_threads()
}

/// Run `f` on a thread of the pool. Parallel work started from a pool thread
/// is handed to the other threads directly; started from outside (e.g. from
/// `main`), every parallel call must wake the pool through a lock, which costs
/// tens of microseconds each — hundreds of times per training step.
pub fn in_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| f())
}

/// Thread counts the kernel tests run their parallel paths with: one (the
/// parallel code with a single worker), two, and three and four, whose splits
/// of odd sizes are uneven — whatever the machine running the tests has.
pub const TEST_POOLS: [usize; 4] = [1, 2, 3, 4];

/// Run `f` once inside a fresh pool of each of `counts` threads. A kernel's
/// split into parallel tasks depends on the thread count, so a test that
/// compares a kernel with its reference above the kernel's parallel threshold
/// runs here, not only in the global pool (which has as many threads as the
/// machine running the tests has cores). A failure names the pool's size.
pub fn on_pools<R: Send>(counts: &[usize], f: impl Fn() -> R + Sync) -> Vec<R> {
    counts
        .iter()
        .map(|&n| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(n).build().expect("a thread pool for a test");
            let run = std::panic::AssertUnwindSafe(|| pool.install(&f));
            match std::panic::catch_unwind(run) {
                Ok(r) => r,
                Err(e) => {
                    let what = e.downcast_ref::<String>().map(String::as_str).or(e.downcast_ref::<&str>().copied());
                    panic!("in a pool of {n} threads: {}", what.unwrap_or("(a panic without a message)"))
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_counts_that_cannot_work_are_refused_before_the_pool_is_built() {
        assert_eq!(init_threads(Some(0)).unwrap_err(), "the number of threads must be at least 1");
        let e = init_threads(Some(100_000_000)).unwrap_err();
        assert!(e.contains("100000000 threads") && e.contains("at most 1024"), "{e}");
    }

    #[test]
    fn on_pools_runs_in_each_size_and_names_the_one_that_failed() {
        assert_eq!(on_pools(&TEST_POOLS, rayon::current_num_threads), TEST_POOLS);
        let failed = std::panic::catch_unwind(|| {
            on_pools(&[1, 3], || assert!(rayon::current_num_threads() < 3, "too many"));
        });
        let e = failed.expect_err("the pool of 3 fails");
        let msg = e.downcast_ref::<String>().expect("a formatted message");
        assert!(msg.starts_with("in a pool of 3 threads: too many"), "{msg}");
    }
}
