//! Out-of-core scoring of a target set against a merged run, under a memory budget.

use std::fs;

use ndarray::{ArrayView2, ArrayViewMut2};
use rayon::prelude::*;

use super::Run;
use super::format::{FileKind, PayloadWriter};
use super::fsio::{create_exclusive, io_err, remove_temps, write_atomic};
use super::plan::ScorePlan;
use super::records::{
    CheckpointInfo, Diffs, FeatureBuf, ScoreHeader, TargetFeaturesHeader, TargetMeta, check_name,
    read_target_meta, target_meta_file,
};
use crate::attribute::ExampleSlice;
use crate::error::{Error, Result, shape_err};
use crate::kernel::Weighting;
use crate::kernel::scoring::{accumulate, check_targets, combine, factor_with_ridge};
use crate::model::Model;
use crate::progress::{Progress, ProgressSink, Stage, Unit};

/// Options of [`Run::score`]: the memory budget (default 1 GiB) and where to report progress
/// (default: nowhere).
#[derive(Debug)]
pub struct ScoreOptions<'a> {
    memory_budget: usize,
    progress: ProgressSink<'a>,
}

impl Default for ScoreOptions<'_> {
    fn default() -> Self {
        Self {
            memory_budget: 1 << 30,
            progress: ProgressSink::default(),
        }
    }
}

impl<'a> ScoreOptions<'a> {
    /// Bytes the scoring may hold at once (the process's own code and allocator overhead
    /// aside): the solved targets of every checkpoint, plus as many row blocks of features and
    /// scores as fit.
    pub fn memory_budget(mut self, bytes: usize) -> Self {
        self.memory_budget = bytes;
        self
    }

    /// The memory budget.
    pub fn budget(&self) -> usize {
        self.memory_budget
    }

    /// Report progress (target features per checkpoint, then score blocks) to `callback`.
    pub fn progress(mut self, callback: &'a mut dyn FnMut(Progress)) -> Self {
        self.progress = ProgressSink::new(callback);
        self
    }
}

/// What a call to [`Run::score`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScoreReport {
    /// Score blocks computed by this call.
    pub computed: usize,
    /// Score blocks already on disk.
    pub skipped: usize,
    /// Blocks processed together (what the memory budget allowed).
    pub blocks_per_pass: usize,
    /// The memory the scoring planned for, in bytes (≤ the budget).
    pub planned_bytes: usize,
}

/// One checkpoint of a target set being scored: its record, target features and solved
/// targets Y = A⁻¹Ψᵀ.
struct Solved<'t> {
    id: u64,
    info: CheckpointInfo,
    psi: ArrayView2<'t, f32>,
    y: faer::Mat<f64>,
    lambda: f64,
}

impl Run {
    /// Computes target features under each listed checkpoint's model, then scores them with
    /// [`Run::score_features`] into target set `name`.
    pub fn score<M: Model>(
        &self,
        name: &str,
        checkpoints: &[(u64, &M)],
        targets: &[M::Example],
        mut opts: ScoreOptions<'_>,
    ) -> Result<ScoreReport> {
        check_name(name)?;
        if checkpoints.is_empty() {
            return Err(Error::Empty("checkpoint list"));
        }
        if targets.is_empty() {
            return Err(Error::Empty("target set"));
        }
        let mut psis = Vec::with_capacity(checkpoints.len());
        for (i, &(id, model)) in checkpoints.iter().enumerate() {
            let info = self.checkpoint_info(id)?;
            if model.num_params() != info.params {
                return Err(shape_err(
                    "model parameters (scoring a checkpoint with a different model from the featurised one)",
                    info.params,
                    model.num_params(),
                ));
            }
            let slice = ExampleSlice::targets(targets);
            let (psi, _) = self.trak.project_set(id, model, slice, &mut |_| {})?;
            opts.progress.report(Progress {
                stage: Stage::Targets { checkpoint: id },
                done: i + 1,
                total: checkpoints.len(),
                unit: Unit::Checkpoints,
            });
            psis.push((id, psi));
        }
        let views: Vec<(u64, ArrayView2<'_, f32>)> =
            psis.iter().map(|(id, p)| (*id, p.view())).collect();
        self.score_features(name, &views, opts)
    }

    /// Scores target features Ψ_m (m × dim, one matrix per listed merged checkpoint) against
    /// the stored training features, out of core, into target set `name`:
    /// τ = (1/M Σ_m Φ_m (Φ_mᵀW_mΦ_m + λ_m I)⁻¹ Ψ_mᵀ) ⊙ Q̄, as [`crate::TrakIndex::score`],
    /// through the same functions ([`crate::kernel`]); W is the run's weighting, whose merged
    /// Gram matrix [`Run::merge`] wrote ([`Run::weighted_gram`]).
    ///
    /// Stores the target features and one score file per training block. If the target set
    /// exists with the same targets, checkpoints and ridge, blocks already scored are kept
    /// (the call resumes); if it exists with different ones (weighting included),
    /// [`Error::RunMismatch`].
    pub fn score_features(
        &self,
        name: &str,
        targets: &[(u64, ArrayView2<'_, f32>)],
        mut opts: ScoreOptions<'_>,
    ) -> Result<ScoreReport> {
        check_name(name)?;
        // Each checkpoint record is read once; the checks then use the records.
        let infos = targets
            .iter()
            .map(|(id, _)| self.checkpoint_info(*id))
            .collect::<Result<Vec<_>>>()?;
        let dim_of = |id| infos.iter().find(|i| i.checkpoint == id).map(|i| i.dim);
        let m = check_targets(targets, |id| dim_of(id).ok_or(Error::UnknownCheckpoint(id)))?;
        let dims: Vec<usize> = infos.iter().map(|i| i.dim).collect();
        let rows = self.meta.block_rows.min(self.meta.n);
        let plan = ScorePlan::new(&dims, m, rows, self.num_blocks(), opts.memory_budget)?;
        let solved = self.solve(targets, infos)?;
        self.record_target_set(name, m, &solved)?;
        let (computed, skipped) = self.score_blocks(name, m, &solved, &plan, &mut opts.progress)?;
        Ok(ScoreReport {
            computed,
            skipped,
            blocks_per_pass: plan.blocks_per_pass,
            planned_bytes: plan.planned_bytes,
        })
    }

    /// λ per checkpoint from its merged Gram matrix, and Y_m = A_m⁻¹ Ψ_mᵀ.
    fn solve<'t>(
        &self,
        targets: &[(u64, ArrayView2<'t, f32>)],
        infos: Vec<CheckpointInfo>,
    ) -> Result<Vec<Solved<'t>>> {
        let mut out = Vec::with_capacity(targets.len());
        for ((id, psi), info) in targets.iter().zip(infos) {
            let g = self.weighted_gram(*id, self.trak.weighting())?;
            let factor = factor_with_ridge(g.view(), self.trak.ridge(), self.meta.n, *id)?;
            drop(g);
            out.push(Solved {
                id: *id,
                info,
                psi: *psi,
                y: factor.solve_targets(psi.view())?,
                lambda: factor.lambda(),
            });
        }
        Ok(out)
    }

    /// Records the target set (exclusively, or checks the stored record) and its features.
    fn record_target_set(&self, name: &str, m: usize, solved: &[Solved<'_>]) -> Result<()> {
        let tdir = self.targets_dir(name);
        fs::create_dir_all(&tdir).map_err(|e| io_err(&tdir, e))?;
        // Scoring a target set is one process's work: stale temporary files are leftovers.
        remove_temps(&tdir, |_| true)?;
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        for s in solved {
            hasher.update(&s.id.to_le_bytes());
            for v in s.psi.iter() {
                hasher.update(&v.to_bits().to_le_bytes());
            }
        }
        let meta = TargetMeta {
            name: name.to_string(),
            m,
            checkpoints: solved.iter().map(|s| s.id).collect(),
            dims: solved.iter().map(|s| s.info.dim).collect(),
            ridge: self.trak.ridge(),
            lambdas: solved.iter().map(|s| s.lambda).collect(),
            targets_hash: hasher.digest(),
        };
        let mpath = self.target_meta_path(name);
        let weighting = self.trak.weighting();
        if !create_exclusive(&mpath, &target_meta_file(&meta, weighting))? {
            let stored = read_target_meta(&mpath)?;
            if stored != (meta.clone(), weighting) {
                let what = target_set_diffs(name, &stored, &(meta, weighting));
                return Err(Error::RunMismatch { path: mpath, what });
            }
        }
        for s in solved {
            let header = TargetFeaturesHeader {
                checkpoint: s.id,
                m,
                dim: s.info.dim,
            };
            let mut w = PayloadWriter::with_capacity(s.psi.len() * 4 + 64);
            w.meta(&header).f32s(s.psi.iter().copied());
            let path = self.target_feat_path(name, s.id);
            write_atomic(&path, &w.finish(FileKind::TargetFeatures))?;
        }
        Ok(())
    }

    /// Scores every block not on disk yet, as many per pass as the plan allows; returns
    /// (computed, skipped). Accumulators and read buffers are allocated once and reused by
    /// every pass and checkpoint (no allocator churn, no fresh pages to fault in).
    fn score_blocks(
        &self,
        name: &str,
        m: usize,
        solved: &[Solved<'_>],
        plan: &ScorePlan,
        progress: &mut ProgressSink<'_>,
    ) -> Result<(usize, usize)> {
        let nb = self.num_blocks();
        let pending: Vec<usize> = (0..nb)
            .filter(|&b| !self.score_path(name, b).exists())
            .collect();
        let mut done = nb - pending.len();
        let report = |done| Progress {
            stage: Stage::Score,
            done,
            total: nb,
            unit: Unit::Blocks,
        };
        progress.report(report(done));
        let slots = plan.blocks_per_pass.min(pending.len());
        let rows_max = self.meta.block_rows.min(self.meta.n);
        let mut pool = PassBuffers {
            acc: vec![vec![0f64; rows_max * m]; slots],
            qsum: vec![vec![0f64; rows_max]; slots],
            feats: (0..slots).map(|_| FeatureBuf::default()).collect(),
            bytes: Vec::new(),
        };
        for pass in pending.chunks(plan.blocks_per_pass) {
            self.score_pass(pass, m, solved, &mut pool)?;
            for (i, &b) in pass.iter().enumerate() {
                let rows = self.block_range(b).len();
                self.write_score_block(
                    name,
                    b,
                    m,
                    &pool.acc[i][..rows * m],
                    &pool.qsum[i][..rows],
                    solved.len(),
                )?;
                done += 1;
                progress.report(report(done));
            }
        }
        Ok((pending.len(), nb - pending.len()))
    }

    /// Accumulates Φ Y and Q of every checkpoint into the accumulators of the pass's blocks.
    fn score_pass(
        &self,
        pass: &[usize],
        m: usize,
        solved: &[Solved<'_>],
        pool: &mut PassBuffers,
    ) -> Result<()> {
        let mut accs = Vec::with_capacity(pass.len());
        let mut qsums = Vec::with_capacity(pass.len());
        for ((&b, a), q) in pass.iter().zip(&mut pool.acc).zip(&mut pool.qsum) {
            let rows = self.block_range(b).len();
            let a = &mut a[..rows * m];
            a.fill(0.0);
            accs.push(ArrayViewMut2::from_shape((rows, m), a).expect("sized buffer"));
            let q = &mut q[..rows];
            q.fill(0.0);
            qsums.push(q);
        }
        for s in solved {
            for (&b, buf) in pass.iter().zip(&mut pool.feats) {
                self.read_feature_block_into(s.id, b, s.info.dim, &mut pool.bytes, buf)?;
            }
            accs.par_iter_mut()
                .zip(qsums.par_iter_mut())
                .zip(pool.feats[..pass.len()].par_iter())
                .try_for_each(|((acc, qs), buf)| {
                    let q = ndarray::ArrayView1::from(&buf.q);
                    accumulate(buf.phi(s.info.dim), q, &s.y, acc.view_mut(), qs)
                })?;
        }
        Ok(())
    }

    /// Writes block `b`'s final scores, combined from its accumulators.
    fn write_score_block(
        &self,
        name: &str,
        b: usize,
        m: usize,
        acc: &[f64],
        qsum: &[f64],
        count: usize,
    ) -> Result<()> {
        let r = self.block_range(b);
        let header = ScoreHeader {
            block: b,
            start: r.start,
            rows: r.len(),
            m,
        };
        let mut w = PayloadWriter::with_capacity(acc.len() * 4 + 64);
        w.meta(&header).f32s(combine(acc, qsum, count));
        write_atomic(&self.score_path(name, b), &w.finish(FileKind::ScoreBlock))
    }
}

/// The buffers of a scoring pass, one slot per block of the pass, reused across passes.
struct PassBuffers {
    acc: Vec<Vec<f64>>,
    qsum: Vec<Vec<f64>>,
    feats: Vec<FeatureBuf>,
    bytes: Vec<u8>,
}

/// What differs between a stored target-set record and the one asked for now.
fn target_set_diffs(
    name: &str,
    (stored, stored_w): &(TargetMeta, Weighting),
    (now, now_w): &(TargetMeta, Weighting),
) -> String {
    let mut diffs = Diffs::default();
    diffs.check("kernel weighting", stored_w, now_w);
    diffs.check("targets", &stored.m, &now.m);
    diffs.check("checkpoints", &stored.checkpoints, &now.checkpoints);
    diffs.check("ridge", &stored.ridge, &now.ridge);
    diffs.check("λ per checkpoint", &stored.lambdas, &now.lambdas);
    if stored.targets_hash != now.targets_hash {
        diffs.0.push("the target features differ".into());
    }
    format!(
        "target set {name:?} was scored with other inputs ({}); use another name or \
         Run::remove_targets",
        diffs.0.join("; ")
    )
}
