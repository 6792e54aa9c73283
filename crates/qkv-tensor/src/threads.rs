//! One rayon thread pool for everything: GEMM, element-wise loops, attention.

/// The environment variable that sets the thread count when no explicit
/// count is given.
pub const THREADS_ENV: &str = "QKV_THREADS";

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
