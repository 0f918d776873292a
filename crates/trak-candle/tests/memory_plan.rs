//! The memory plan counts candle's working memory (issue 33): a limit below what a
//! featurisation needs is refused before anything is computed, and at the limit it accepts,
//! the heap (measured by a counting allocator, the whole binary's) grows by no more than it,
//! once candle's one-time allocations (per-thread GEMM buffers) are made.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use common::llama::{VOCAB, checkpoint};
use trak::{Error, ProjectorKind, Trak};
use trak_candle::{CandleModel, SequenceObjective, TokenCollate, TokenSeq};

/// The system allocator, counting the bytes in use and their peak.
struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grow(n: usize) {
    let now = CURRENT.fetch_add(n, Ordering::SeqCst) + n;
    PEAK.fetch_max(now, Ordering::SeqCst);
}

// SAFETY: every call is forwarded to the system allocator unchanged; only counters move.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grow(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        grow(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        CURRENT.fetch_sub(layout.size(), Ordering::SeqCst);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        grow(new);
        CURRENT.fetch_sub(layout.size(), Ordering::SeqCst);
        unsafe { System.realloc(ptr, layout, new) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[test]
fn featurisation_stays_within_the_memory_limit_it_accepts() {
    let lm = checkpoint(false, 3).model().unwrap();
    let docs: Vec<TokenSeq> = (0..24u32)
        .map(|i| TokenSeq::document(vec![1, 2 + i % 30, 9, 3 + i % 7, 22, 7, 11]))
        .collect();
    let collate = TokenCollate {
        context: 12,
        pad: 0,
    };
    let model = CandleModel::builder(&lm, collate, SequenceObjective::new(VOCAB))
        .chunk_rows(4)
        .build(&docs[..4])
        .unwrap();
    let features = |limit: usize| {
        let trak = Trak::builder()
            .proj_dim(1024)
            .projector(ProjectorKind::FACTORED)
            .batch_size(8)
            .memory_limit(limit)
            .build()
            .unwrap();
        trak.features(0, &model, &docs)
    };
    // What the run was allowed: the features alone. Refused now, naming candle's share.
    let needed = match features(20_500) {
        Err(Error::MemoryBudget { needed, reason, .. }) => {
            assert!(reason.contains("the model's working memory"), "{reason}");
            needed
        }
        other => panic!("expected MemoryBudget, got {:?}", other.map(|f| f.dim())),
    };
    assert!(needed > 100_000, "{needed}");
    // One run first: what candle allocates once and keeps (its GEMM's per-thread packing
    // buffers, lazily built tables) is not per call, and not what the plan bounds.
    features(usize::MAX).unwrap();
    let base = CURRENT.load(Ordering::SeqCst);
    PEAK.store(base, Ordering::SeqCst);
    let f = features(needed).unwrap();
    let peak = PEAK.load(Ordering::SeqCst) - base;
    eprintln!(
        "MEMORY_PLAN needed={needed} heap_peak={peak} ratio={:.3}",
        peak as f64 / needed as f64
    );
    assert_eq!(f.dim(), (24, 1024));
    assert!(
        peak <= needed,
        "heap grew by {peak} bytes, the plan allowed {needed}"
    );
}
