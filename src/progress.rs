//! Progress reports from long-running calls.
//!
//! [`crate::TrainFeatures::featurize_with_progress`] and the [`crate::store`] calls take a
//! callback `&mut dyn FnMut(Progress)`. It is called from the calling thread (never from a
//! worker), after each unit of work, with cumulative counts, so a progress bar can simply
//! set its position to [`Progress::done`]. Work skipped because it was already on disk counts
//! as done from the first report.

/// What is being worked on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Training features of a checkpoint.
    Featurize {
        /// Checkpoint id.
        checkpoint: u64,
    },
    /// Summing a checkpoint's Gram partials and checking its blocks.
    Merge {
        /// Checkpoint id.
        checkpoint: u64,
    },
    /// Target features of a checkpoint.
    Targets {
        /// Checkpoint id.
        checkpoint: u64,
    },
    /// The score product, block by block of training rows.
    Score,
}

/// What [`Progress::done`] and [`Progress::total`] count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Examples (in-memory featurisation).
    Examples,
    /// Row blocks of a stored run.
    Blocks,
    /// Checkpoints (target features, one checkpoint at a time).
    Checkpoints,
}

/// One progress report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// The stage.
    pub stage: Stage,
    /// Units finished so far (cumulative).
    pub done: usize,
    /// Units in the whole stage.
    pub total: usize,
    /// The unit.
    pub unit: Unit,
}

/// A callback that ignores every report.
pub fn silent() -> impl FnMut(Progress) {
    |_| {}
}

/// Where a long call sends its reports: nowhere (the default) or a callback. The options of
/// the store's long calls ([`crate::store::FeaturizeOptions`], [`crate::store::MergeOptions`],
/// [`crate::store::ScoreOptions`]) hold one.
#[derive(Default)]
pub struct ProgressSink<'a>(Option<&'a mut dyn FnMut(Progress)>);

impl<'a> ProgressSink<'a> {
    /// Sends every report to `callback`.
    pub fn new(callback: &'a mut dyn FnMut(Progress)) -> Self {
        Self(Some(callback))
    }

    /// Sends `report` to the callback, if there is one.
    pub(crate) fn report(&mut self, report: Progress) {
        if let Some(f) = self.0.as_mut() {
            f(report)
        }
    }
}

impl std::fmt::Debug for ProgressSink<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "ProgressSink(callback)"
        } else {
            "ProgressSink(silent)"
        })
    }
}
