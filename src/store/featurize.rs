//! Resumable, shardable featurisation of one checkpoint into a run.

use std::collections::BTreeSet;
use std::fs;
use std::ops::Range;

use ndarray::{Array1, Array2};

use super::Run;
use super::format::FileKind;
use super::fsio::{create_exclusive, io_err, remove_temps};
use super::records::{CheckpointInfo, Diffs, Fingerprint, meta_file};
use crate::attribute::ExampleSlice;
use crate::error::{Error, Result, invalid};
use crate::model::Model;
use crate::progress::{Progress, ProgressSink, Stage, Unit};

/// A contiguous share of a run's blocks, for featurising one run from several processes.
///
/// Shard `index` of `count` gets blocks `index·B/count .. (index+1)·B/count` of the B blocks;
/// the shards of one `count` cover every block exactly once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    index: usize,
    count: usize,
}

impl Shard {
    /// Every block (a single process).
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// Shard `index` (0-based) of `count`.
    pub fn new(index: usize, count: usize) -> Result<Self> {
        if count == 0 || index >= count {
            return Err(invalid(
                "shard",
                format!("{index} of {count}"),
                "count ≥ 1 and index < count",
            ));
        }
        Ok(Self { index, count })
    }

    /// This shard's index (0-based).
    pub fn index(&self) -> usize {
        self.index
    }

    /// How many shards the blocks are split into.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The blocks of this shard out of `blocks`.
    pub fn blocks(&self, blocks: usize) -> Range<usize> {
        let at = |i: usize| (i as u128 * blocks as u128 / self.count as u128) as usize;
        at(self.index)..at(self.index + 1)
    }
}

/// What a call to [`Run::featurize`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeaturizeReport {
    /// Blocks computed by this call.
    pub computed: usize,
    /// Blocks of the shard already on disk (not recomputed).
    pub skipped: usize,
}

/// Options of [`Run::featurize`]: which [`Shard`] of the blocks (default: all), and where to
/// report progress (default: nowhere).
#[derive(Debug, Default)]
pub struct FeaturizeOptions<'a> {
    shard: Shard,
    progress: ProgressSink<'a>,
}

impl<'a> FeaturizeOptions<'a> {
    /// Featurise only the blocks of `shard`.
    pub fn shard(mut self, shard: Shard) -> Self {
        self.shard = shard;
        self
    }

    /// Report progress (blocks done) to `callback`.
    pub fn progress(mut self, callback: &'a mut dyn FnMut(Progress)) -> Self {
        self.progress = ProgressSink::new(callback);
        self
    }
}

impl Default for Shard {
    fn default() -> Self {
        Shard::ALL
    }
}

impl Run {
    /// Featurises checkpoint `checkpoint` (the model `model`) on the blocks of the options'
    /// shard that are not on disk yet: features, Q and the Gram partial under the run's
    /// weighting. A block whose features are stored but whose partial is not (the run was
    /// featurised under another weighting) gets only its partial, from the stored features
    /// (and, for [`crate::Weighting::GaussNewton`], the curvature of its rows); `computed`
    /// counts those blocks too. `train` is the whole training set (every shard passes
    /// all of it, in the same order). Calling it again after an interruption continues from
    /// the last complete block. Before resuming, the first row of a stored block is recomputed
    /// and compared bit for bit ([`Error::RunMismatch`] if the data or model changed).
    pub fn featurize<M: Model>(
        &self,
        checkpoint: u64,
        model: &M,
        train: &[M::Example],
        mut opts: FeaturizeOptions<'_>,
    ) -> Result<FeaturizeReport> {
        if train.is_empty() {
            return Err(Error::Empty("training set"));
        }
        if train.len() != self.meta.n {
            let (expected, got) = (self.meta.n, train.len());
            return Err(Error::TrainSizeMismatch { expected, got });
        }
        let dim = self.trak.feature_dim(model)?;
        self.ensure_checkpoint(&CheckpointInfo {
            checkpoint,
            params: model.num_params(),
            dim,
            fingerprint: fingerprint(model, &train[0])?,
        })?;
        let range = opts.shard.blocks(self.num_blocks());
        self.clean_temps(checkpoint, &range)?;
        let done: BTreeSet<usize> = self
            .blocks_done(checkpoint)?
            .into_iter()
            .filter(|b| range.contains(b))
            .collect();
        if let Some(&b) = done.iter().next() {
            self.spot_check(checkpoint, model, train, b, dim)?;
        }
        let todo: Vec<usize> = range.clone().filter(|b| !done.contains(b)).collect();
        let total = range.len();
        let report = |done| Progress {
            stage: Stage::Featurize { checkpoint },
            done,
            total,
            unit: Unit::Blocks,
        };
        let mut finished = total - todo.len();
        opts.progress.report(report(finished));
        for &b in &todo {
            self.featurize_block(checkpoint, model, train, (b, dim))?;
            finished += 1;
            opts.progress.report(report(finished));
        }
        Ok(FeaturizeReport {
            computed: todo.len(),
            skipped: total - todo.len(),
        })
    }

    /// Computes block `b`: its features, Q and Gram partial under the run's weighting (with
    /// the curvature of its rows for Gauss-Newton), or only the partial when its features
    /// are stored already.
    fn featurize_block<M: Model>(
        &self,
        checkpoint: u64,
        model: &M,
        train: &[M::Example],
        (b, dim): (usize, usize),
    ) -> Result<()> {
        let r = self.block_range(b);
        let rows = &train[r.clone()];
        let curv = match self.trak.weighting().needs_curvature() {
            true => Some(self.trak.curvature(model, rows)?),
            false => None,
        };
        let curv = curv.as_ref().map(|c| c.view());
        if self.feat_path(checkpoint, b).exists() {
            return self.complete_partial(checkpoint, b, dim, curv);
        }
        let slice = ExampleSlice::training(rows, r.start);
        let (phi, q) = self
            .trak
            .project_set(checkpoint, model, slice, &mut |_| {})?;
        self.write_block(checkpoint, b, phi.view(), (q.view(), curv))
    }

    /// Recomputes the first row of stored block `b` and compares it bit for bit.
    fn spot_check<M: Model>(
        &self,
        checkpoint: u64,
        model: &M,
        train: &[M::Example],
        b: usize,
        dim: usize,
    ) -> Result<()> {
        let start = self.block_range(b).start;
        let slice = ExampleSlice::training(&train[start..start + 1], start);
        let (now, q) = self
            .trak
            .project_set(checkpoint, model, slice, &mut |_| {})?;
        let source = |start| {
            format!(
                "checkpoint {checkpoint}, training example {start}: the stored features \
                 differ from the ones recomputed now, so the training set (or the model) \
                 is not the one this run was featurised with"
            )
        };
        self.check_first_row(checkpoint, b, dim, (now.row(0), q[0]), &source)
    }

    /// Records checkpoint `info` (first caller) or checks it against the stored record.
    pub(super) fn ensure_checkpoint(&self, info: &CheckpointInfo) -> Result<()> {
        let dir = self.ckpt_dir(info.checkpoint);
        fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
        let path = self.ckpt_meta_path(info.checkpoint);
        if create_exclusive(&path, &meta_file(FileKind::CheckpointMeta, info))? {
            return Ok(());
        }
        let stored = self.checkpoint_info(info.checkpoint)?;
        let mut diffs = Diffs::default();
        diffs.check("parameter count", &stored.params, &info.params);
        diffs.check("feature dimension", &stored.dim, &info.dim);
        diffs.check("model fingerprint", &stored.fingerprint, &info.fingerprint);
        if stored.fingerprint != info.fingerprint {
            diffs.0.push(
                "a different model for the same checkpoint id (for models without \
                 Model::fingerprint, the gradient at the first training example differs)"
                    .into(),
            );
        }
        if diffs.0.is_empty() {
            Ok(())
        } else {
            Err(Error::RunMismatch {
                path,
                what: format!("checkpoint {}: {}", info.checkpoint, diffs.0.join("; ")),
            })
        }
    }

    /// Removes temporary files of blocks in `blocks` left by a killed process.
    fn clean_temps(&self, checkpoint: u64, blocks: &Range<usize>) -> Result<()> {
        remove_temps(&self.ckpt_dir(checkpoint), |name| {
            name.strip_prefix("block-")
                .and_then(|r| r.split('.').next())
                .and_then(|d| d.parse::<usize>().ok())
                .is_some_and(|b| blocks.contains(&b))
        })
    }
}

/// How a model is identified: [`Model::fingerprint`], else a probe of its gradient and Q at
/// the first training example.
fn fingerprint<M: Model>(model: &M, first: &M::Example) -> Result<Fingerprint> {
    Ok(match model.fingerprint() {
        Some(h) => Fingerprint::Params(h),
        None => Fingerprint::GradientProbe(gradient_probe(model, first, model.num_params())?),
    })
}

/// xxh3-64 of the output gradient and Q at one example (a fingerprint for models without
/// [`crate::Model::fingerprint`]).
fn gradient_probe<M: Model>(model: &M, example: &M::Example, params: usize) -> Result<u64> {
    let mut g = Array2::<f32>::zeros((1, params));
    model.output_grads(std::slice::from_ref(example), g.view_mut())?;
    let mut q = Array1::<f32>::zeros(1);
    model.output_q(std::slice::from_ref(example), q.view_mut())?;
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for v in g.iter().chain(q.iter()) {
        h.update(&v.to_bits().to_le_bytes());
    }
    Ok(h.digest())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_every_block_exactly_once_in_order() {
        for blocks in [0, 1, 2, 7, 40, 1001] {
            for count in 1..=9 {
                let mut next = 0;
                for index in 0..count {
                    let r = Shard::new(index, count).unwrap().blocks(blocks);
                    assert_eq!(r.start, next, "B={blocks} shard {index}/{count}");
                    // balanced: sizes differ by at most one
                    assert!(r.len() <= blocks / count + 1 && r.len() >= blocks / count);
                    next = r.end;
                }
                assert_eq!(next, blocks);
            }
        }
        assert_eq!(Shard::ALL.blocks(5), 0..5);
        assert_eq!(Shard::default(), Shard::ALL);
    }

    #[test]
    fn shard_arithmetic_does_not_overflow() {
        let r = Shard::new(2, 3).unwrap().blocks(usize::MAX);
        assert_eq!(r.end, usize::MAX);
        assert!(r.start > usize::MAX / 3 * 2 - 2);
    }

    #[test]
    fn invalid_shards_are_refused() {
        for (index, count) in [(0, 0), (3, 3), (5, 2)] {
            assert!(matches!(
                Shard::new(index, count),
                Err(Error::InvalidParameter {
                    parameter: "shard",
                    ..
                })
            ));
        }
    }
}
