//! What the in-memory pipeline allocates: each call adds up its large buffers, checks the sum
//! against the memory limit before allocating anything ([`Error::MemoryBudget`], naming what
//! the memory is for), then allocates them fallibly ([`Error::OutOfMemory`]) instead of letting
//! the allocator abort the process.

use std::alloc::{Layout, alloc_zeroed};
use std::sync::OnceLock;

use ndarray::{Array1, Array2};

use crate::error::{Error, Result};

/// Bytes of `count` values of `width` bytes, saturating (an overflow is "too much" anyway).
pub(crate) fn bytes(count: usize, width: usize) -> usize {
    count.saturating_mul(width)
}

/// Checks that the buffers `parts` ((what, bytes) pairs) fit in `limit`, or in the machine's
/// memory when no limit is set. `hint` says how to need less.
pub(crate) fn check(limit: Option<usize>, parts: &[(&str, usize)], hint: &str) -> Result<()> {
    let Some(budget) = limit.or_else(machine_memory) else {
        return Ok(());
    };
    let needed = parts.iter().fold(0usize, |s, p| s.saturating_add(p.1));
    if needed <= budget {
        return Ok(());
    }
    let listed: Vec<String> = parts
        .iter()
        .map(|(w, b)| format!("{w}: {b} bytes"))
        .collect();
    Err(Error::MemoryBudget {
        budget,
        needed,
        reason: format!("{}; {hint}", listed.join(", ")),
    })
}

/// How many work items of `item_bytes` each to hold at once next to `planned` bytes already
/// allocated: at most `max`, within a quarter of what the limit (or the machine's memory)
/// leaves, and at least 1.
pub(crate) fn in_flight(
    limit: Option<usize>,
    planned: usize,
    item_bytes: usize,
    max: usize,
) -> usize {
    let max = max.max(1);
    let Some(budget) = limit.or_else(machine_memory) else {
        return max;
    };
    let spare = budget.saturating_sub(planned) / 4;
    (spare / item_bytes.max(1)).clamp(1, max)
}

/// RAM + swap in bytes, from `/proc/meminfo` (Linux); `None` where it cannot be read.
pub(crate) fn machine_memory() -> Option<usize> {
    static MEM: OnceLock<Option<usize>> = OnceLock::new();
    *MEM.get_or_init(|| {
        let info = std::fs::read_to_string("/proc/meminfo").ok()?;
        let kib = |key: &str| -> Option<usize> {
            let line = info.lines().find(|l| l.starts_with(key))?;
            line.split_whitespace().nth(1)?.parse().ok()
        };
        let total = kib("MemTotal:")?.saturating_add(kib("SwapTotal:").unwrap_or(0));
        Some(total.saturating_mul(1024))
    })
}

/// Element types whose all-zero bit pattern is the value 0.
pub(crate) trait ZeroBits: Copy {}
impl ZeroBits for f32 {}
impl ZeroBits for f64 {}

/// A vector of `len` zeros, or [`Error::OutOfMemory`] if the allocator refuses it. The pages
/// come zeroed from the allocator (no write pass over the buffer).
fn zeroed_vec<T: ZeroBits>(len: usize, what: &'static str) -> Result<Vec<T>> {
    let oom = |bytes| Error::OutOfMemory { what, bytes };
    let layout = Layout::array::<T>(len).map_err(|_| oom(usize::MAX))?;
    if layout.size() == 0 {
        return Ok(Vec::new());
    }
    // SAFETY: the layout has non-zero size. The pointer, if not null, is a fresh allocation of
    // the global allocator with exactly the layout `Vec<T>` uses for capacity `len`, and
    // every value is initialised: zero bits are a valid `T` (`ZeroBits`).
    let ptr = unsafe { alloc_zeroed(layout) };
    if ptr.is_null() {
        return Err(oom(layout.size()));
    }
    Ok(unsafe { Vec::from_raw_parts(ptr.cast::<T>(), len, len) })
}

/// A zero matrix of `shape`, allocated fallibly.
pub(crate) fn zeros2<T: ZeroBits>(shape: (usize, usize), what: &'static str) -> Result<Array2<T>> {
    let len = shape.0.checked_mul(shape.1).ok_or(Error::OutOfMemory {
        what,
        bytes: usize::MAX,
    })?;
    let v = zeroed_vec(len, what)?;
    Ok(Array2::from_shape_vec(shape, v).expect("length is the product of the shape"))
}

/// A zero vector of `len`, allocated fallibly.
pub(crate) fn zeros1<T: ZeroBits>(len: usize, what: &'static str) -> Result<Array1<T>> {
    Ok(Array1::from(zeroed_vec(len, what)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_over_the_limit_names_each_buffer() {
        let err = check(Some(100), &[("features", 80), ("batch", 40)], "lower k").unwrap_err();
        match err {
            Error::MemoryBudget {
                budget,
                needed,
                reason,
            } => {
                assert_eq!((budget, needed), (100, 120));
                assert!(reason.contains("features: 80 bytes") && reason.contains("lower k"));
            }
            other => panic!("{other:?}"),
        }
        assert!(check(Some(120), &[("features", 80), ("batch", 40)], "").is_ok());
    }

    #[test]
    fn work_in_flight_stays_within_a_quarter_of_the_spare_memory() {
        assert_eq!(in_flight(Some(1000), 200, 100, 16), 2);
        assert_eq!(in_flight(Some(1000), 200, 10, 16), 16);
        assert_eq!(in_flight(Some(1000), 2000, 10, 16), 1);
        assert_eq!(in_flight(Some(1000), 0, 0, 0), 1);
    }

    #[test]
    fn impossible_allocations_are_errors() {
        assert!(matches!(
            zeros2::<f32>((usize::MAX / 2, 3), "x"),
            Err(Error::OutOfMemory {
                bytes: usize::MAX,
                ..
            })
        ));
        let a = zeros2::<f64>((3, 4), "x").unwrap();
        assert!(a.iter().all(|&v| v == 0.0) && a.dim() == (3, 4));
        assert_eq!(zeros1::<f32>(0, "x").unwrap().len(), 0);
    }
}
