//! A persistent thread pool for the parallel loop of one kernel: `threads - 1` workers plus
//! the calling thread, each running one contiguous share of the kernel's parallel range.
//!
//! Why not rayon: a kernel call is a *static* split of a range into exactly one share per
//! thread (contiguous rows, so each thread streams its own part of the output), started
//! thousands of times per second for small kernels. The pool dispatches by bumping a
//! generation counter under one mutex and waking workers that spin briefly before they
//! park on a condition variable (and the dispatcher, waiting for the shares, is notified
//! only when it parked), with no heap allocation per dispatch (no boxed job: the
//! job is a borrowed closure) -- the zero-allocation runs of `tests/alloc.rs` depend on
//! it. Rayon's `join`/`scope` allocate job frames per spawn and split adaptively by work
//! stealing, which is what we do not want here. With one thread everything runs inline.

use crate::ffi::Job;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

/// Spin iterations before a waiting thread parks (a few microseconds).
const SPIN: u32 = 1 << 12;

/// The pool. Dropping it stops and joins the workers.
pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// Held while a `run` dispatches; a second concurrent (or nested) `run` runs inline.
    dispatch: Mutex<()>,
}

impl std::fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadPool").field("threads", &self.threads()).finish()
    }
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    /// The dispatch generation, mirrored from `State` for spinning workers.
    generation: AtomicU64,
    /// Worker shares of the current job not finished yet.
    pending: AtomicUsize,
    done: Mutex<()>,
    done_cv: Condvar,
    /// The dispatcher is parked on `done_cv` (or about to be): only then does the worker
    /// that finishes the last share lock `done` and notify, a system call that would
    /// otherwise delay its return to spinning for the next dispatch.
    dispatcher_parked: AtomicBool,
    /// A worker's share panicked.
    panicked: AtomicBool,
}

struct State {
    generation: u64,
    job: Option<Job>,
    shares: usize,
    shutdown: bool,
    /// Workers parked on `wake`.
    sleepers: usize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Share `i` of `shares` of `0..extent`: contiguous, sizes differing by at most one.
pub fn share(extent: usize, shares: usize, i: usize) -> (usize, usize) {
    (extent * i / shares, extent * (i + 1) / shares)
}

impl ThreadPool {
    /// A pool running on `threads` threads (at least 1): the caller and `threads - 1`
    /// workers.
    pub fn new(threads: usize) -> std::io::Result<ThreadPool> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State { generation: 0, job: None, shares: 0, shutdown: false, sleepers: 0 }),
            wake: Condvar::new(),
            generation: AtomicU64::new(0),
            pending: AtomicUsize::new(0),
            done: Mutex::new(()),
            done_cv: Condvar::new(),
            dispatcher_parked: AtomicBool::new(false),
            panicked: AtomicBool::new(false),
        });
        let mut pool = ThreadPool { shared, workers: Vec::new(), dispatch: Mutex::new(()) };
        for index in 1..threads.max(1) {
            let shared = pool.shared.clone();
            let handle = std::thread::Builder::new()
                .name(format!("atomc-worker-{index}"))
                .spawn(move || worker(&shared, index))?;
            pool.workers.push(handle);
        }
        Ok(pool)
    }

    /// The number of threads that run shares, the caller included.
    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Runs `f(begin, end)` over contiguous shares of `0..extent`, one per thread, each at
    /// least `grain` long (a range shorter than two grains runs whole on the caller), and
    /// returns when all have finished: `Ok`, or the first error a share returned. Shares
    /// run at once on different threads. Allocates nothing (unless a share fails).
    pub fn run<E: Send>(
        &self,
        extent: usize,
        grain: usize,
        f: impl Fn(usize, usize) -> Result<(), E> + Sync,
    ) -> Result<(), E> {
        let shares = self.threads().min(extent / grain.max(1));
        if shares <= 1 {
            return f(0, extent);
        }
        let _dispatch = match self.dispatch.try_lock() {
            Ok(g) => g,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return f(0, extent),
        };
        let error: Mutex<Option<E>> = Mutex::new(None);
        let job = |i: usize| {
            let (begin, end) = share(extent, shares, i);
            if let Err(e) = f(begin, end) {
                lock(&error).get_or_insert(e);
            }
        };
        let sh = &*self.shared;
        sh.pending.store(shares - 1, Ordering::Release);
        {
            let mut st = lock(&sh.state);
            st.generation += 1;
            st.job = Some(Job::new(&job));
            st.shares = shares;
            sh.generation.store(st.generation, Ordering::Release);
            if st.sleepers > 0 {
                sh.wake.notify_all();
            }
        }
        {
            // Waits for the workers even if the caller's share panics: they borrow `job`.
            let _wait = WaitGuard(sh);
            job(0);
        }
        if sh.panicked.swap(false, Ordering::AcqRel) {
            panic!("a thread pool worker panicked running a share");
        }
        match error.into_inner().unwrap_or_else(PoisonError::into_inner) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// On drop, waits until every worker share of the current job is done, then forgets it.
struct WaitGuard<'a>(&'a Shared);

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        let sh = self.0;
        let mut spins = 0;
        while sh.pending.load(Ordering::Acquire) != 0 {
            if spins < SPIN {
                spins += 1;
                std::hint::spin_loop();
                continue;
            }
            let g = lock(&sh.done);
            // Sequentially consistent with the worker's decrement and check: either it
            // sees the flag (and notifies under `done`) or this sees the count at 0.
            sh.dispatcher_parked.store(true, Ordering::SeqCst);
            if sh.pending.load(Ordering::SeqCst) == 0 {
                sh.dispatcher_parked.store(false, Ordering::Relaxed);
                break;
            }
            drop(sh.done_cv.wait(g).unwrap_or_else(PoisonError::into_inner));
            sh.dispatcher_parked.store(false, Ordering::Relaxed);
        }
        lock(&sh.state).job = None;
    }
}

fn worker(sh: &Shared, index: usize) {
    let mut seen = 0u64;
    loop {
        let mut spins = 0;
        while sh.generation.load(Ordering::Acquire) == seen && spins < SPIN {
            spins += 1;
            std::hint::spin_loop();
        }
        let (job, shares) = {
            let mut st = lock(&sh.state);
            while st.generation == seen && !st.shutdown {
                st.sleepers += 1;
                st = sh.wake.wait(st).unwrap_or_else(PoisonError::into_inner);
                st.sleepers -= 1;
            }
            if st.shutdown {
                return;
            }
            seen = st.generation;
            (st.job, st.shares)
        };
        // A worker that missed a generation sees the newest one; the dispatcher of an
        // older one only waited for the workers it gave a share.
        if index >= shares {
            continue;
        }
        if let Some(job) = job {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.call(index)));
            if r.is_err() {
                sh.panicked.store(true, Ordering::Release);
            }
        }
        if sh.pending.fetch_sub(1, Ordering::SeqCst) == 1 && sh.dispatcher_parked.load(Ordering::SeqCst) {
            let _g = lock(&sh.done);
            sh.done_cv.notify_one();
        }
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        {
            let mut st = lock(&self.shared.state);
            st.shutdown = true;
            self.shared.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            // A worker that panicked outside a share has nothing left to report.
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn every_index_runs_once_across_many_dispatches() {
        for threads in [1, 2, 3, 4] {
            let pool = ThreadPool::new(threads).unwrap();
            assert_eq!(pool.threads(), threads);
            for extent in [0, 1, 2, 3, 7, 64, 1000] {
                let hits: Vec<AtomicUsize> = (0..extent).map(|_| AtomicUsize::new(0)).collect();
                pool.run(extent, 1, |b, e| {
                    for h in &hits[b..e] {
                        h.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok::<(), ()>(())
                })
                .unwrap();
                assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1), "threads {threads}, extent {extent}");
            }
        }
    }

    #[test]
    fn shares_are_contiguous_and_cover_the_range() {
        for extent in 0..20 {
            for shares in 1..6 {
                let mut next = 0;
                for i in 0..shares {
                    let (b, e) = share(extent, shares, i);
                    assert_eq!(b, next);
                    assert!(e >= b && e - b <= extent / shares + 1);
                    next = e;
                }
                assert_eq!(next, extent);
            }
        }
    }

    #[test]
    fn an_error_is_returned_and_the_pool_keeps_working() {
        let pool = ThreadPool::new(3).unwrap();
        let r = pool.run(30, 1, |b, _| if b > 0 { Err(format!("share at {b}")) } else { Ok(()) });
        assert!(r.unwrap_err().starts_with("share at"));
        let count = AtomicUsize::new(0);
        pool.run(30, 1, |b, e| {
            count.fetch_add(e - b, Ordering::Relaxed);
            Ok::<(), ()>(())
        })
        .unwrap();
        assert_eq!(count.load(Ordering::Relaxed), 30);
    }

    #[test]
    fn grain_keeps_small_ranges_on_the_caller() {
        let pool = ThreadPool::new(4).unwrap();
        let caller = std::thread::current().id();
        pool.run(10, 8, |_, _| {
            assert_eq!(std::thread::current().id(), caller);
            Ok::<(), ()>(())
        })
        .unwrap();
    }

    #[test]
    fn nested_runs_run_inline() {
        let pool = ThreadPool::new(2).unwrap();
        let count = AtomicUsize::new(0);
        pool.run(4, 1, |_, _| {
            pool.run(4, 1, |b, e| {
                count.fetch_add(e - b, Ordering::Relaxed);
                Ok::<(), ()>(())
            })
        })
        .unwrap();
        assert_eq!(count.load(Ordering::Relaxed), 8);
    }
}
