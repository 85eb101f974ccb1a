//! Interleaving in blocks and the report of one row: p50 and p99 of each side, and their
//! ratios against the targets.
//!
//! Sides alternate by block, A B B A A B ..., never call by call: one side's background work
//! (an audit writer, a supervisor, a GC) must land in its own block, not in the other side's
//! timings.

/// Runs `blocks` blocks of each side, alternating which goes first; returns all samples of
/// each side, in nanoseconds.
pub fn interleave(
    blocks: usize,
    mut plugbox: impl FnMut() -> Vec<u64>,
    mut baseline: impl FnMut() -> Vec<u64>,
) -> (Vec<u64>, Vec<u64>) {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    // One block of each first, not counted: caches, branch predictors, lazily made buffers.
    plugbox();
    baseline();
    for block in 0..blocks {
        if block % 2 == 0 {
            a.extend(plugbox());
            b.extend(baseline());
        } else {
            b.extend(baseline());
            a.extend(plugbox());
        }
    }
    (a, b)
}

/// Target ratios: p50 and p99 of plugbox over the baseline's.
pub struct Targets {
    /// Largest p50 ratio.
    pub p50: f64,
    /// Largest p99 ratio.
    pub p99: f64,
}

/// Prints one row: both sides' p50 and p99, and the ratios against `targets`.
pub fn report(
    label: &str,
    baseline_name: &str,
    plugbox: &mut [u64],
    base: &mut [u64],
    targets: &Targets,
) {
    let (a50, a99) = (super::pct(plugbox, 0.5), super::pct(plugbox, 0.99));
    let (b50, b99) = (super::pct(base, 0.5), super::pct(base, 0.99));
    let (r50, r99) = (a50 / b50, a99 / b99);
    let judge = |r: f64, t: f64| match (t.is_finite(), r <= t) {
        (false, _) => format!("{r:>7.2}x (no target)"),
        (true, true) => format!("{r:>7.2}x (target <= {t:.1}x, met)"),
        (true, false) => format!("{r:>7.2}x (target <= {t:.1}x, MISSED)"),
    };
    println!("{label} ({} samples each side):", plugbox.len());
    println!("  plugbox   p50 {a50:>8.1} us   p99 {a99:>8.1} us");
    println!("  baseline  p50 {b50:>8.1} us   p99 {b99:>8.1} us   ({baseline_name})");
    println!(
        "  ratio     p50 {}   p99 {}",
        judge(r50, targets.p50),
        judge(r99, targets.p99)
    );
}

/// The machine's load average now (`/proc/loadavg`'s first three fields) and its CPU count.
pub fn load() -> String {
    let avg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let three: Vec<&str> = avg.split_whitespace().take(3).collect();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("load average {} on {cpus} CPUs", three.join(" "))
}

/// A thread that keeps one CPU busy until dropped (stability under a second busy core).
pub struct Spinner(
    std::sync::Arc<std::sync::atomic::AtomicBool>,
    Option<std::thread::JoinHandle<()>>,
);

impl Spinner {
    /// Starts spinning.
    pub fn start() -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&stop);
        let handle = std::thread::spawn(move || {
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                std::hint::spin_loop();
            }
        });
        Self(stop, Some(handle))
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(h) = self.1.take() {
            let _ = h.join();
        }
    }
}
