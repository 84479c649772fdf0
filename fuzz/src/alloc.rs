//! A global allocator that counts the bytes live on the Rust heap and their
//! peak, to measure what a decode holds. It wraps `System` (under the
//! sanitizers that is still their malloc). Memory allocated by C code
//! (zstd's decoder) bypasses it.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    sync::atomic::{AtomicUsize, Ordering::Relaxed},
};

pub struct Counting;

#[global_allocator]
static GLOBAL: Counting = Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(n: usize) {
    let live = LIVE.fetch_add(n, Relaxed).wrapping_add(n);
    PEAK.fetch_max(live, Relaxed);
}

fn shrank(n: usize) {
    LIVE.fetch_sub(n, Relaxed);
}

// SAFETY: every call is passed on to `System` unchanged; only counters are
// updated around it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                shrank(layout.size() - new_size);
            }
        }
        p
    }
}

/// Heap bytes a call left allocated (`live`) and the most it held at once
/// (`peak`), both above what was live when it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub live: usize,
    pub peak: usize,
}

/// Runs `f`, measuring its heap use. The result is returned, not dropped,
/// so `live` is what it holds.
pub fn measure<T>(f: impl FnOnce() -> T) -> (T, Usage) {
    let before = LIVE.load(Relaxed);
    PEAK.store(before, Relaxed);
    let out = f();
    let live = LIVE.load(Relaxed).saturating_sub(before);
    let peak = PEAK.load(Relaxed).saturating_sub(before);
    (out, Usage { live, peak })
}

/// Whether the counting allocator is the global one (it is whenever this
/// crate is linked); checked once so a silent no-op cannot pass for a bound.
pub fn is_counting() -> bool {
    let (b, usage) = measure(|| std::hint::black_box(vec![0u8; 4096]));
    drop(b);
    usage.live >= 4096
}
