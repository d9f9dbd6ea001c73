//! One step (verify, or load) for every plugin of a config, on scoped threads bounded by the
//! cores. The results come back in file order, so a caller that takes the first error in that order
//! reports exactly what a loop over the entries would have reported.

use std::sync::atomic::{AtomicUsize, Ordering};

/// `f(0) .. f(weights.len() - 1)`, in that order, computed on up to as many threads as the machine
/// has cores (the calling thread is one of them). The heaviest items (by `weights`, e.g. module
/// bytes) start first, so that a large module does not start last and leave the other cores idle;
/// equal weights keep file order. Every index runs exactly once, whatever the others return. The
/// caller's tracing span is entered on every thread, so log lines keep their context.
pub(crate) fn map_in_order<R: Send>(weights: &[u64], f: impl Fn(usize) -> R + Sync) -> Vec<R> {
    let n = weights.len();
    let threads = std::thread::available_parallelism().map_or(1, |c| c.get()).min(n);
    if threads <= 1 {
        return (0..n).map(f).collect();
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(weights[i]));
    let next = AtomicUsize::new(0);
    let span = tracing::Span::current();
    let work = || {
        let _entered = span.enter();
        let mut done = Vec::new();
        while let Some(&i) = order.get(next.fetch_add(1, Ordering::Relaxed)) {
            done.push((i, f(i)));
        }
        done
    };
    let mut slots: Vec<Option<R>> = (0..n).map(|_| None).collect();
    std::thread::scope(|s| {
        let helpers: Vec<_> = (1..threads).map(|_| s.spawn(work)).collect();
        let mut all = work();
        for h in helpers {
            match h.join() {
                Ok(done) => all.extend(done),
                // A step that panics panics the caller, as it would have in a loop.
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        for (i, r) in all {
            slots[i] = Some(r);
        }
    });
    slots.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Mutex;

    use super::*;

    #[test]
    fn results_come_back_in_index_order_whatever_the_weights_and_each_index_runs_once() {
        for weights in [vec![], vec![5], vec![1, 9, 3, 9, 0, 7, 2, 8], vec![0; 17]] {
            let ran = Mutex::new(Vec::new());
            let out = map_in_order(&weights, |i| {
                ran.lock().unwrap().push(i);
                i * 10
            });
            assert_eq!(out, (0..weights.len()).map(|i| i * 10).collect::<Vec<_>>());
            let mut ran = ran.into_inner().unwrap();
            ran.sort_unstable();
            assert_eq!(ran, (0..weights.len()).collect::<Vec<_>>(), "each index exactly once");
        }
    }

    #[test]
    fn the_work_is_spread_over_the_cores() {
        let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
        let barrier = std::sync::Barrier::new(cores.min(4));
        let threads = Mutex::new(HashSet::new());
        // Each of the first `cores.min(4)` items waits for the others: this only finishes if they
        // run at the same time, on as many threads.
        map_in_order(&vec![1; cores.min(4)], |_| {
            barrier.wait();
            threads.lock().unwrap().insert(std::thread::current().id());
        });
        assert_eq!(threads.into_inner().unwrap().len(), cores.min(4));
    }
}
