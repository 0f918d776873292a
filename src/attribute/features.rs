//! Per-checkpoint training features before finalisation: [`TrainFeatures`].

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use ndarray::{Array1, Array2, ArrayView1, ArrayView2};

use super::Trak;
use super::featurize::ExampleSlice;
use super::index::{IndexedCkpt, TrakIndex};
use super::memory::{self, bytes};
use crate::error::{Error, Result};
use crate::kernel::scoring::factor_with_ridge;
use crate::kernel::{Ridge, Weighting, gram_weighted};
use crate::model::Model;
use crate::progress::{Progress, Stage, Unit};
use crate::project::{ProjectorKind, dense};

/// Training features of one checkpoint. Shared (`Arc`) between a [`TrainFeatures`], its
/// re-configured copies and the indices finalised from them; the Gram matrix is computed once.
#[derive(Debug, Clone)]
pub(super) struct CkptFeatures {
    pub(super) phi: Arc<Array2<f32>>,
    pub(super) q: Arc<Array1<f32>>,
    /// Curvature r of each training example, when the configuration needed it.
    pub(super) r: Option<Arc<Array1<f32>>>,
    /// Parameter count of the model that was featurised.
    pub(super) p: usize,
    /// Whether the features were imported (they can never have a curvature).
    imported: bool,
    /// The Gram matrix under each weighting (index: [`Weighting::ALL`]), computed once.
    gram: Arc<[OnceLock<Array2<f64>>; 3]>,
}

impl CkptFeatures {
    fn new(phi: Array2<f32>, q: Arc<Array1<f32>>, r: Option<Arc<Array1<f32>>>, p: usize) -> Self {
        Self {
            phi: Arc::new(phi),
            q,
            r,
            p,
            imported: false,
            gram: Arc::new(Default::default()),
        }
    }

    /// ΦᵀWΦ under `weighting` (cached), after checking the weights.
    fn gram(&self, weighting: Weighting, checkpoint: u64) -> Result<&Array2<f64>> {
        let cell = &self.gram[weighting.index()];
        if let Some(g) = cell.get() {
            return Ok(g);
        }
        if weighting.needs_curvature() && self.r.is_none() {
            return Err(match self.imported {
                true => Error::ImportedWithoutCurvature { checkpoint },
                false => Error::CurvatureNotRecorded { checkpoint },
            });
        }
        let r = self.r.as_deref().map(|r| r.view());
        let w = weighting.weights(self.q.view(), r, (checkpoint, 0))?;
        let w = w.as_ref().map(|w| w.as_slice().expect("contiguous"));
        Ok(cell.get_or_init(|| gram_weighted(self.phi.view(), w)))
    }
}

/// One checkpoint read back from a [`crate::store::Run`].
pub(crate) struct StoredCheckpoint {
    pub(crate) id: u64,
    pub(crate) phi: Array2<f32>,
    pub(crate) q: Array1<f32>,
    pub(crate) params: usize,
    /// The merged Gram matrix and the weighting it is under.
    pub(crate) gram: (Weighting, Array2<f64>),
    /// Whether its features were imported ([`crate::Run::import_npy`]).
    pub(crate) imported: bool,
}

/// Per-checkpoint training features Φ_m (n × k) and Q_m (n), before finalisation.
///
/// Cloning is cheap: features are shared, not copied.
#[derive(Debug, Clone)]
pub struct TrainFeatures {
    cfg: Trak,
    n: Option<usize>,
    ckpts: BTreeMap<u64, CkptFeatures>,
}

impl Trak {
    /// An empty collection of per-checkpoint training features.
    pub fn featurizer(&self) -> TrainFeatures {
        TrainFeatures {
            cfg: self.clone(),
            n: None,
            ckpts: BTreeMap::new(),
        }
    }
}

impl TrainFeatures {
    /// Featurises the training set under `model`, the checkpoint with id `checkpoint`: every
    /// example's output gradient is projected with the checkpoint's matrix, and its Q recorded.
    /// All checkpoints must see the same training set (same size, same order).
    pub fn featurize<M: Model>(
        &mut self,
        checkpoint: u64,
        model: &M,
        train: &[M::Example],
    ) -> Result<()> {
        self.featurize_with_progress(checkpoint, model, train, &mut |_| {})
    }

    /// [`TrainFeatures::featurize`], reporting the number of examples done after each batch.
    pub fn featurize_with_progress<M: Model>(
        &mut self,
        checkpoint: u64,
        model: &M,
        train: &[M::Example],
        progress: &mut dyn FnMut(Progress),
    ) -> Result<()> {
        if train.is_empty() {
            return Err(Error::Empty("training set"));
        }
        if let Some(n) = self.n.filter(|&n| n != train.len()) {
            return Err(Error::TrainSizeMismatch {
                expected: n,
                got: train.len(),
            });
        }
        if self.ckpts.contains_key(&checkpoint) {
            return Err(Error::DuplicateCheckpoint(checkpoint));
        }
        let total = train.len();
        let mut report = |done| {
            progress(Progress {
                stage: Stage::Featurize { checkpoint },
                done,
                total,
                unit: Unit::Examples,
            })
        };
        let slice = ExampleSlice::training(train, 0);
        let (phi, q) = self
            .cfg
            .project_set(checkpoint, model, slice, &mut report)?;
        let r = if self.cfg.weighting.needs_curvature() {
            Some(Arc::new(self.cfg.curvature(model, train)?))
        } else {
            None
        };
        self.n = Some(train.len());
        let f = CkptFeatures::new(phi, Arc::new(q), r, model.num_params());
        self.ckpts.insert(checkpoint, f);
        Ok(())
    }

    /// Features assembled from stored parts (id, Φ, Q, parameter count, Gram matrix).
    pub(crate) fn from_parts(cfg: Trak, n: usize, parts: Vec<StoredCheckpoint>) -> Self {
        let ckpts = parts
            .into_iter()
            .map(|c| {
                let mut f = CkptFeatures::new(c.phi, Arc::new(c.q), None, c.params);
                f.imported = c.imported;
                let (w, g) = c.gram;
                f.gram[w.index()].set(g).expect("fresh cell");
                (c.id, f)
            })
            .collect();
        Self {
            cfg,
            n: Some(n),
            ckpts,
        }
    }

    /// The configuration these features were computed with.
    pub fn config(&self) -> &Trak {
        &self.cfg
    }

    /// Ids of the checkpoints featurised so far, ascending.
    pub fn checkpoints(&self) -> Vec<u64> {
        self.ckpts.keys().copied().collect()
    }

    /// Φ of a checkpoint (n × k), if featurised.
    pub fn features(&self, checkpoint: u64) -> Option<ArrayView2<'_, f32>> {
        self.ckpts.get(&checkpoint).map(|c| c.phi.view())
    }

    /// Q of a checkpoint (length n), if featurised.
    pub fn q(&self, checkpoint: u64) -> Option<ArrayView1<'_, f32>> {
        self.ckpts.get(&checkpoint).map(|c| c.q.view())
    }

    /// The same features with another kernel weighting for [`TrainFeatures::finalize`]
    /// (shares Φ, Q, r and the cached Gram matrices). [`Weighting::GaussNewton`] needs the
    /// curvature, recorded only when the features were computed under it: finalising without
    /// it is [`Error::CurvatureNotRecorded`] ([`Error::ImportedWithoutCurvature`] for
    /// imported features).
    pub fn with_weighting(&self, weighting: Weighting) -> Self {
        let mut out = self.clone();
        out.cfg = self.cfg.with_weighting(weighting);
        out
    }

    /// The same features with another ridge rule for [`TrainFeatures::finalize`] (shares Φ
    /// and the cached Gram matrices: a ridge sweep pays for each Gram matrix once).
    pub fn with_ridge(&self, ridge: Ridge) -> Result<Self> {
        let mut out = self.clone();
        out.cfg = self.cfg.with_ridge(ridge)?;
        Ok(out)
    }

    /// The features a dense projection of dimension `k` (≤ the current one) would give
    /// ([`dense::prefix_features`]: the first k columns, rescaled). Equal to featurising at k
    /// up to f32 rounding, so one featurisation at the largest k serves a sweep over k.
    pub fn prefix(&self, k: usize) -> Result<Self> {
        if !matches!(
            self.cfg.projector,
            ProjectorKind::Rademacher | ProjectorKind::Gaussian
        ) {
            return Err(Error::UnsupportedProjector {
                projector: self.cfg.projector.to_string(),
                operation: "prefix(k) (it needs a dense random projection)",
            });
        }
        let mut ckpts = BTreeMap::new();
        for (&id, c) in &self.ckpts {
            let phi = dense::prefix_features(c.phi.view(), k)?;
            let mut f = CkptFeatures::new(phi, c.q.clone(), c.r.clone(), c.p);
            f.imported = c.imported;
            ckpts.insert(id, f);
        }
        let mut cfg = self.cfg.clone();
        cfg.proj_dim = k;
        Ok(Self {
            cfg,
            n: self.n,
            ckpts,
        })
    }

    /// Computes each checkpoint's Gram matrix (cached), ridge and Cholesky factor.
    pub fn finalize(&self) -> Result<TrakIndex> {
        let Some(n) = self.n.filter(|_| !self.ckpts.is_empty()) else {
            return Err(Error::Empty(
                "featurised checkpoints (call featurize first)",
            ));
        };
        let mut ckpts = BTreeMap::new();
        for (&id, c) in &self.ckpts {
            let k = c.phi.ncols();
            let fresh = if c.gram[self.cfg.weighting.index()].get().is_some() {
                0
            } else {
                1
            };
            memory::check(
                self.cfg.memory_limit,
                &[
                    ("features widened to f64", fresh * bytes(n, bytes(k, 8))),
                    ("Gram matrix", fresh * bytes(k, bytes(k, 8))),
                    ("Cholesky factor", bytes(k, bytes(k, 8))),
                ],
                "lower k",
            )?;
            let gram = c.gram(self.cfg.weighting, id)?;
            let factor = factor_with_ridge(gram.view(), self.cfg.ridge, n, id)?;
            let feats = c.clone();
            ckpts.insert(id, IndexedCkpt { feats, factor });
        }
        Ok(TrakIndex::new(self.cfg.clone(), n, ckpts))
    }
}
