//! The attribution pipeline: configure → featurise each checkpoint → finalise → score.
//!
//! ```text
//! Trak::builder()…build()          configuration (k, projector, seed, ridge, batch size)
//!   └ trak.featurizer()            TrainFeatures: empty
//!       └ .featurize(id, model, train)   per checkpoint: Φ_m = projected ∇f, Q_m
//!       └ .finalize()              TrakIndex: K_m = Φ_mᵀΦ_m, λ_m, Cholesky of K_m + λ_m I
//!           └ .score(&[(id, model)], targets)   τ = (1/M Σ_m Φ_m A_m⁻¹ Ψ_mᵀ) ⊙ mean_m Q_m
//! ```
//!
//! Scores are an **n_train × n_targets** matrix: entry (i, j) is the attribution of training
//! example i to target j; positive means including example i raises the target's model output.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, Axis, s};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::kernel::{Factor, Ridge, add_scores, gram};
use crate::model::{FactoredModel, Model};
use crate::progress::{Progress, Stage, Unit};
use crate::project::{self, FactoredMatrices, FactoredProjector, Projector, ProjectorKind};

/// How a batch becomes features: flat gradients through a [`Projector`], or layer factors
/// through a factored projector's matrices.
enum Engine<'a, E> {
    Flat(Box<dyn Projector>),
    Factored(&'a dyn FactoredModel<E>, FactoredMatrices),
}

impl<E> Engine<'_, E> {
    fn output_dim(&self) -> usize {
        match self {
            Engine::Flat(proj) => proj.output_dim(),
            Engine::Factored(_, m) => m.output_dim(),
        }
    }
}

/// Attribution settings. Build with [`Trak::builder`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trak {
    proj_dim: usize,
    projector: ProjectorKind,
    seed: u64,
    ridge: Ridge,
    batch_size: usize,
}

/// Builder for [`Trak`]. Defaults: k = 2048, Rademacher projection, seed 0,
/// [`Ridge::default`] (λ = 2·tr(ΦᵀΦ)/n), batch size 64.
#[derive(Debug, Clone)]
pub struct TrakBuilder {
    cfg: Trak,
}

impl Default for TrakBuilder {
    fn default() -> Self {
        Self {
            cfg: Trak {
                proj_dim: 2048,
                projector: ProjectorKind::default(),
                seed: 0,
                ridge: Ridge::default(),
                batch_size: 64,
            },
        }
    }
}

impl TrakBuilder {
    /// Projection dimension k (ignored by [`ProjectorKind::Identity`], where k = p).
    pub fn proj_dim(mut self, k: usize) -> Self {
        self.cfg.proj_dim = k;
        self
    }
    /// Projector kind.
    pub fn projector(mut self, kind: ProjectorKind) -> Self {
        self.cfg.projector = kind;
        self
    }
    /// Seed of the random projection (the matrix of checkpoint c is keyed by (seed, c)).
    pub fn seed(mut self, seed: u64) -> Self {
        self.cfg.seed = seed;
        self
    }
    /// Ridge λ (default [`crate::kernel::DEFAULT_RIDGE`]).
    pub fn ridge(mut self, ridge: Ridge) -> Self {
        self.cfg.ridge = ridge;
        self
    }
    /// Examples per model call and projection batch. Larger batches amortise the generation
    /// of the projection matrix; memory is batch × p floats. Results do not depend on it.
    pub fn batch_size(mut self, b: usize) -> Self {
        self.cfg.batch_size = b;
        self
    }
    /// Validates and returns the configuration.
    pub fn build(self) -> Result<Trak> {
        let c = &self.cfg;
        if c.proj_dim == 0 && c.projector != ProjectorKind::Identity {
            return Err(Error::InvalidConfig(
                "projection dimension k must be positive".into(),
            ));
        }
        if c.batch_size == 0 {
            return Err(Error::InvalidConfig("batch size must be positive".into()));
        }
        c.ridge.validate()?;
        if let ProjectorKind::Sparse { s } = c.projector {
            project::SparseProjector::new(1, c.proj_dim, s, c.seed)?;
        }
        Ok(self.cfg)
    }
}

impl Trak {
    /// A builder with the defaults.
    pub fn builder() -> TrakBuilder {
        TrakBuilder::default()
    }

    /// Projection dimension k as configured.
    pub fn proj_dim(&self) -> usize {
        self.proj_dim
    }

    /// Projector kind.
    pub fn projector(&self) -> ProjectorKind {
        self.projector
    }

    /// Projection seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Ridge rule.
    pub fn ridge(&self) -> Ridge {
        self.ridge
    }

    /// Featurisation batch size.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// The same configuration with another ridge rule.
    pub fn with_ridge(&self, ridge: Ridge) -> Result<Trak> {
        ridge.validate()?;
        Ok(Trak {
            ridge,
            ..self.clone()
        })
    }

    /// An empty collection of per-checkpoint training features.
    pub fn featurizer(&self) -> TrainFeatures {
        TrainFeatures {
            cfg: self.clone(),
            n: None,
            ckpts: BTreeMap::new(),
        }
    }

    /// The engine that featurises `model` at `checkpoint` under this configuration.
    fn engine<'a, M: Model>(
        &self,
        checkpoint: u64,
        model: &'a M,
    ) -> Result<Engine<'a, M::Example>> {
        let p = model.num_params();
        if p == 0 {
            return Err(Error::InvalidConfig("the model has no parameters".into()));
        }
        Ok(if self.projector == ProjectorKind::Factored {
            let fm = model.factored().ok_or_else(|| {
                Error::InvalidConfig(
                    "ProjectorKind::Factored needs a model whose Model::factored() returns its \
                     FactoredModel view; this model has none"
                        .into(),
                )
            })?;
            let layers = fm.linear_layers();
            let covered: usize = layers.iter().map(|l| l.num_params()).sum();
            if covered != p {
                return Err(Error::InvalidConfig(format!(
                    "factored projection: the linear layers cover {covered} parameters but the \
                     model has {p}; every parameter must belong to one layer"
                )));
            }
            let fp = FactoredProjector::new(&layers, self.proj_dim, self.seed)?;
            Engine::Factored(fm, fp.at_checkpoint(checkpoint))
        } else {
            Engine::Flat(project::build(self.projector, p, self.proj_dim, self.seed)?)
        })
    }

    /// Feature dimension for `model` (k, p for the identity, or the factored split's total).
    pub(crate) fn feature_dim<M: Model>(&self, model: &M) -> Result<usize> {
        Ok(self.engine(0, model)?.output_dim())
    }

    /// Projected output gradients of `examples` under `model` at `checkpoint` (n × k), and Q
    /// if `with_q`. `set` names the set in error messages, where example indices are shifted
    /// by `offset` (the position of `examples[0]` in the caller's set). `progress` is called
    /// after each batch with the number of examples done.
    // Internal: the arguments are all needed by the in-memory and stored pipelines alike.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn project_set<M: Model>(
        &self,
        checkpoint: u64,
        model: &M,
        examples: &[M::Example],
        set: &'static str,
        with_q: bool,
        offset: usize,
        progress: &mut dyn FnMut(usize),
    ) -> Result<(Array2<f32>, Array1<f32>)> {
        let p = model.num_params();
        let engine = self.engine(checkpoint, model)?;
        let k = engine.output_dim();
        let n = examples.len();
        let bs = self.batch_size.min(n.max(1));
        let mut feats = Array2::<f32>::zeros((n, k));
        let mut q = Array1::<f32>::zeros(if with_q { n } else { 0 });
        let mut grads = match engine {
            Engine::Flat(_) => Array2::<f32>::zeros((bs, p)),
            Engine::Factored(..) => Array2::<f32>::zeros((0, 0)),
        };
        for (bi, batch) in examples.chunks(bs).enumerate() {
            let start = bi * bs;
            let len = batch.len();
            let out = feats.slice_mut(s![start..start + len, ..]);
            match &engine {
                Engine::Flat(proj) => {
                    let mut g = grads.slice_mut(s![..len, ..]);
                    model.output_grads(batch, g.view_mut())?;
                    if let Some(flat) = g.iter().position(|v| !v.is_finite()) {
                        return Err(Error::NonFiniteGradient {
                            set,
                            example: offset + start + flat / p,
                            checkpoint,
                            param: flat % p,
                        });
                    }
                    proj.project(checkpoint, g.view(), out)?;
                }
                Engine::Factored(fm, mats) => {
                    let factors = fm.layer_factors(batch)?;
                    mats.check(&factors, len)?;
                    for (layer, f) in factors.iter().enumerate() {
                        for (what, m) in [("activation", &f.acts), ("output gradient", &f.deltas)] {
                            if let Some(flat) = m.iter().position(|v| !v.is_finite()) {
                                let per_example = f.positions * m.ncols();
                                return Err(Error::NonFiniteFactor {
                                    set,
                                    example: offset + start + flat / per_example,
                                    checkpoint,
                                    layer,
                                    what,
                                    index: flat % per_example,
                                });
                            }
                        }
                    }
                    mats.project(&factors, out)?;
                }
            }
            if with_q {
                let mut qb = q.slice_mut(s![start..start + len]);
                model.output_q(batch, qb.view_mut())?;
                if let Some(i) = qb.iter().position(|v| !v.is_finite()) {
                    return Err(Error::NonFiniteQ {
                        example: offset + start + i,
                        checkpoint,
                    });
                }
            }
            progress(start + len);
        }
        Ok((feats, q))
    }

    /// Projected output gradients of `examples` (n × k) under `model` at `checkpoint`: the same
    /// features the pipeline uses for targets. Useful for baselines (e.g. gradient similarity).
    pub fn features<M: Model>(
        &self,
        checkpoint: u64,
        model: &M,
        examples: &[M::Example],
    ) -> Result<Array2<f32>> {
        if examples.is_empty() {
            return Err(Error::Empty("example set"));
        }
        Ok(self
            .project_set(checkpoint, model, examples, "target", false, 0, &mut |_| {})?
            .0)
    }
}

/// Training features of one checkpoint. Shared (`Arc`) between a [`TrainFeatures`], its
/// re-configured copies and the indices finalised from them; the Gram matrix is computed once.
#[derive(Debug, Clone)]
struct CkptFeatures {
    phi: Arc<Array2<f32>>,
    q: Arc<Array1<f32>>,
    /// Parameter count of the model that was featurised.
    p: usize,
    gram: Arc<OnceLock<Array2<f64>>>,
}

impl CkptFeatures {
    fn new(phi: Array2<f32>, q: Array1<f32>, p: usize) -> Self {
        Self {
            phi: Arc::new(phi),
            q: Arc::new(q),
            p,
            gram: Arc::new(OnceLock::new()),
        }
    }

    fn gram(&self) -> &Array2<f64> {
        self.gram.get_or_init(|| gram(self.phi.view()))
    }
}

/// One checkpoint read back from a [`crate::store::Run`].
pub(crate) struct StoredCheckpoint {
    pub(crate) id: u64,
    pub(crate) phi: Array2<f32>,
    pub(crate) q: Array1<f32>,
    pub(crate) params: usize,
    pub(crate) gram: Array2<f64>,
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
        let (phi, q) =
            self.cfg
                .project_set(checkpoint, model, train, "training", true, 0, &mut report)?;
        self.n = Some(train.len());
        self.ckpts
            .insert(checkpoint, CkptFeatures::new(phi, q, model.num_params()));
        Ok(())
    }

    /// Features assembled from stored parts (id, Φ, Q, parameter count, Gram matrix ΦᵀΦ).
    pub(crate) fn from_parts(cfg: Trak, n: usize, parts: Vec<StoredCheckpoint>) -> Self {
        let ckpts = parts
            .into_iter()
            .map(|c| {
                let f = CkptFeatures::new(c.phi, c.q, c.params);
                f.gram.set(c.gram).expect("fresh cell");
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

    /// The same features with another ridge rule for [`TrainFeatures::finalize`] (shares Φ
    /// and the cached Gram matrices: a ridge sweep pays for each Gram matrix once).
    pub fn with_ridge(&self, ridge: Ridge) -> Result<Self> {
        let mut out = self.clone();
        out.cfg = self.cfg.with_ridge(ridge)?;
        Ok(out)
    }

    /// The features a dense projection of dimension `k` (≤ the current one) would give: the
    /// matrix of dimension k is, entry for entry, the first k columns of the current one
    /// rescaled from 1/√k_current to 1/√k (see [`crate::project::dense`]), so this keeps the
    /// first k columns of Φ and rescales them. Equal to featurising at k up to f32 rounding.
    /// One featurisation at the largest k thus serves a sweep over k.
    pub fn prefix(&self, k: usize) -> Result<Self> {
        let cur = self.cfg.proj_dim;
        if !matches!(
            self.cfg.projector,
            ProjectorKind::Rademacher | ProjectorKind::Gaussian
        ) {
            return Err(Error::InvalidConfig(format!(
                "prefix() needs a dense random projection (its first k columns are the \
                 projection of dimension k), not {:?}",
                self.cfg.projector
            )));
        }
        if k == 0 || k > cur {
            return Err(Error::InvalidConfig(format!(
                "prefix dimension must be in 1..={cur}, got {k}"
            )));
        }
        let scale = ((cur as f64) / (k as f64)).sqrt() as f32;
        let ckpts = self
            .ckpts
            .iter()
            .map(|(&id, c)| {
                let phi = c.phi.slice(s![.., ..k]).mapv(|v| v * scale);
                let mut f = CkptFeatures::new(phi, Array1::zeros(0), c.p);
                f.q = c.q.clone();
                (id, f)
            })
            .collect();
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
        if self.ckpts.is_empty() {
            return Err(Error::Empty(
                "featurised checkpoints (call featurize first)",
            ));
        }
        let mut ckpts = BTreeMap::new();
        for (&id, c) in &self.ckpts {
            let k_mat = c.gram();
            let trace: f64 = k_mat.diag().sum();
            let n = self.n.expect("set with the first checkpoint");
            let lambda = self.cfg.ridge.lambda(trace, k_mat.nrows(), n);
            let factor = Factor::new(k_mat.view(), lambda, id)?;
            ckpts.insert(
                id,
                IndexedCkpt {
                    feats: c.clone(),
                    factor,
                },
            );
        }
        Ok(TrakIndex {
            cfg: self.cfg.clone(),
            n: self.n.expect("set with the first checkpoint"),
            ckpts,
        })
    }
}

#[derive(Debug, Clone)]
struct IndexedCkpt {
    feats: CkptFeatures,
    factor: Factor,
}

/// Finalised training features, ready to score any number of target sets.
#[derive(Debug, Clone)]
pub struct TrakIndex {
    cfg: Trak,
    n: usize,
    ckpts: BTreeMap<u64, IndexedCkpt>,
}

impl TrakIndex {
    /// Number of training examples n.
    pub fn n_train(&self) -> usize {
        self.n
    }

    /// Ids of the finalised checkpoints, ascending.
    pub fn checkpoints(&self) -> Vec<u64> {
        self.ckpts.keys().copied().collect()
    }

    /// The ridge λ used for a checkpoint.
    pub fn lambda(&self, checkpoint: u64) -> Result<f64> {
        Ok(self.get(checkpoint)?.factor.lambda())
    }

    /// The configuration.
    pub fn config(&self) -> &Trak {
        &self.cfg
    }

    fn get(&self, checkpoint: u64) -> Result<&IndexedCkpt> {
        self.ckpts
            .get(&checkpoint)
            .ok_or(Error::UnknownCheckpoint(checkpoint))
    }

    /// Projected output gradients of `targets` under the model at `checkpoint`, checked
    /// against what was featurised (same parameter count). Feed them to
    /// [`TrakIndex::score_features`] to score the same targets under several indices.
    pub fn target_features<M: Model>(
        &self,
        checkpoint: u64,
        model: &M,
        targets: &[M::Example],
    ) -> Result<Array2<f32>> {
        if targets.is_empty() {
            return Err(Error::Empty("target set"));
        }
        let ck = self.get(checkpoint)?;
        if model.num_params() != ck.feats.p {
            return Err(crate::error::shape_err(
                "model parameters (scoring a checkpoint with a different model from the featurised one)",
                ck.feats.p,
                model.num_params(),
            ));
        }
        Ok(self
            .cfg
            .project_set(checkpoint, model, targets, "target", false, 0, &mut |_| {})?
            .0)
    }

    /// Un-weighted scores of one checkpoint, S_m = Φ_m (Φ_mᵀΦ_m + λI)⁻¹ Ψ_mᵀ (n × m, f64).
    pub fn checkpoint_scores<M: Model>(
        &self,
        checkpoint: u64,
        model: &M,
        targets: &[M::Example],
    ) -> Result<Array2<f64>> {
        let psi = self.target_features(checkpoint, model, targets)?;
        let mut acc = Array2::zeros((self.n, targets.len()));
        self.add_checkpoint_scores(checkpoint, psi.view(), &mut acc)?;
        Ok(acc)
    }

    fn add_checkpoint_scores(
        &self,
        checkpoint: u64,
        psi: ArrayView2<'_, f32>,
        acc: &mut Array2<f64>,
    ) -> Result<()> {
        let ck = self.get(checkpoint)?;
        let y = ck.factor.solve_targets(psi)?;
        add_scores(ck.feats.phi.view(), &y, acc.view_mut())
    }

    /// TRAK scores of `targets` from the ensemble `checkpoints` (each an id given to
    /// [`TrainFeatures::featurize`] and the model at that checkpoint):
    ///
    /// τ = (1/M Σ_m S_m) ⊙ Q̄,  Q̄_i = 1/M Σ_m Q_{m,i},
    ///
    /// with S_m from [`TrakIndex::checkpoint_scores`] and Q̄ broadcast over targets. Any
    /// non-empty subset of the featurised checkpoints may be used; Q̄ is averaged over the
    /// same subset. Returns an n_train × n_targets matrix.
    pub fn score<M: Model>(
        &self,
        checkpoints: &[(u64, &M)],
        targets: &[M::Example],
    ) -> Result<Scores> {
        if checkpoints.is_empty() {
            return Err(Error::Empty("checkpoint list"));
        }
        if targets.is_empty() {
            return Err(Error::Empty("target set"));
        }
        check_ids(checkpoints.iter().map(|c| c.0), |id| {
            self.get(id).map(|_| ())
        })?;
        let psis = checkpoints
            .iter()
            .map(|&(id, m)| Ok((id, self.target_features(id, m, targets)?)))
            .collect::<Result<Vec<_>>>()?;
        let views: Vec<(u64, ArrayView2<'_, f32>)> =
            psis.iter().map(|(id, p)| (*id, p.view())).collect();
        self.score_features(&views)
    }

    /// [`TrakIndex::score`] from precomputed target features Ψ_m (targets × k), one matrix per
    /// listed checkpoint (e.g. from [`TrakIndex::target_features`] or [`Trak::features`]).
    pub fn score_features(&self, targets: &[(u64, ArrayView2<'_, f32>)]) -> Result<Scores> {
        if targets.is_empty() {
            return Err(Error::Empty("checkpoint list"));
        }
        check_ids(targets.iter().map(|t| t.0), |id| self.get(id).map(|_| ()))?;
        let m = targets[0].1.nrows();
        if m == 0 {
            return Err(Error::Empty("target set"));
        }
        let mut acc = Array2::<f64>::zeros((self.n, m));
        let mut qsum = Array1::<f64>::zeros(self.n);
        for (id, psi) in targets {
            if psi.nrows() != m {
                return Err(crate::error::shape_err(
                    "target features rows (same targets for every checkpoint)",
                    m,
                    psi.nrows(),
                ));
            }
            self.add_checkpoint_scores(*id, psi.view(), &mut acc)?;
            qsum.zip_mut_with(&*self.get(*id)?.feats.q, |s, &q| *s += q as f64);
        }
        let count = targets.len() as f64;
        let values = Array2::from_shape_fn(acc.raw_dim(), |(i, j)| {
            ((acc[(i, j)] / count) * (qsum[i] / count)) as f32
        });
        Ok(Scores { values })
    }
}

/// Every id known (`known`) and none repeated.
fn check_ids(ids: impl Iterator<Item = u64>, known: impl Fn(u64) -> Result<()>) -> Result<()> {
    let mut seen = std::collections::BTreeSet::new();
    for id in ids {
        known(id)?;
        if !seen.insert(id) {
            return Err(Error::DuplicateCheckpoint(id));
        }
    }
    Ok(())
}

/// Attribution scores: an n_train × n_targets matrix (row i = training example i,
/// column j = target j).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    values: Array2<f32>,
}

impl Scores {
    /// Wraps a score matrix (n_train × n_targets).
    pub fn new(values: Array2<f32>) -> Self {
        Self { values }
    }

    /// The n_train × n_targets matrix.
    pub fn values(&self) -> ArrayView2<'_, f32> {
        self.values.view()
    }

    /// The matrix, by value.
    pub fn into_inner(self) -> Array2<f32> {
        self.values
    }

    /// Number of training examples (rows).
    pub fn n_train(&self) -> usize {
        self.values.nrows()
    }

    /// Number of targets (columns).
    pub fn n_targets(&self) -> usize {
        self.values.ncols()
    }

    /// Scores of every training example for target `j` (`None` if j ≥ n_targets).
    pub fn target(&self, j: usize) -> Option<ArrayView1<'_, f32>> {
        (j < self.n_targets()).then(|| self.values.column(j))
    }

    /// For each target, its `k` highest-scoring training examples as (index, score), best
    /// first (ties broken by the lower index). Returns fewer than `k` if n_train < k.
    pub fn top_k(&self, k: usize) -> Vec<Vec<(usize, f32)>> {
        self.values
            .axis_iter(Axis(1))
            .map(|col| {
                let mut idx: Vec<usize> = (0..col.len()).collect();
                let cmp = |a: &usize, b: &usize| col[*b].total_cmp(&col[*a]).then(a.cmp(b));
                let kk = k.min(idx.len());
                if kk == 0 {
                    return Vec::new();
                }
                idx.select_nth_unstable_by(kk - 1, cmp);
                idx.truncate(kk);
                idx.sort_by(cmp);
                idx.into_iter().map(|i| (i, col[i])).collect()
            })
            .collect()
    }
}
