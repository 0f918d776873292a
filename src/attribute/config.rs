//! Attribution settings and their validating builder.

use serde::{Deserialize, Serialize};

use crate::error::{Result, invalid};
use crate::kernel::{Ridge, Weighting};
use crate::project::{self, ProjectorKind};

/// Attribution settings. Build with [`Trak::builder`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trak {
    pub(super) proj_dim: usize,
    pub(super) projector: ProjectorKind,
    pub(super) seed: u64,
    pub(super) ridge: Ridge,
    /// A configuration serialised before weightings existed is plain TRAK.
    #[serde(default = "plain")]
    pub(super) weighting: Weighting,
    pub(super) batch_size: usize,
    pub(super) memory_limit: Option<usize>,
    /// The batch-independence check's tolerance, when it is on.
    #[serde(default)]
    pub(super) batch_check: Option<f32>,
}

fn plain() -> Weighting {
    Weighting::None
}

/// Builder for [`Trak`]. Defaults: k = 2048, Rademacher projection, seed 0,
/// [`Ridge::default`] (λ = 2·tr(ΦᵀWΦ)/n), the Q-weighted kernel ([`Weighting::Q`]; plain TRAK
/// is `.weighting(Weighting::None)`), batch size 64, memory limit = the machine's memory.
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
                weighting: Weighting::default(),
                batch_size: 64,
                memory_limit: None,
                batch_check: None,
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
    /// Kernel weighting (default [`Weighting::Q`], chosen by the LDS table in
    /// docs/VALIDATION.md; [`Weighting::None`] is plain TRAK). [`Weighting::GaussNewton`]
    /// makes featurisation record each training example's curvature, which the model must
    /// give ([`crate::Model::output_curvature`]). The Q weighting needs Q ≥ 0: a regression
    /// output (Q = the signed residual) needs another weighting
    /// ([`crate::Error::BadKernelWeight`] otherwise).
    pub fn weighting(mut self, weighting: Weighting) -> Self {
        self.cfg.weighting = weighting;
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
    /// The most bytes one in-memory call (featurising a checkpoint, finalising, scoring) may
    /// plan to allocate; a call that would need more fails with
    /// [`crate::Error::MemoryBudget`] saying how much it needs, before allocating anything.
    /// Default: the machine's memory (RAM + swap, read from `/proc/meminfo` on Linux;
    /// elsewhere only the allocator's refusal, [`crate::Error::OutOfMemory`], stops a call).
    ///
    /// What is planned: the features and Q, the gradient batch of the flat projectors, and
    /// the model's own working memory for each batch in flight
    /// ([`crate::Model::working_memory`]: for a candle network, its autograd graph and
    /// gradients, measured when it is built, and the layer factors). The factored engine
    /// runs as many batches at once as a quarter of what the limit leaves holds, so a lower
    /// limit trades speed for memory, down to one batch at a time. Not planned: one-time
    /// allocations of a framework (candle's per-thread GEMM buffers, a few MB), the
    /// projection matrices of the factored projector (Σ over layers of out·k_out + in·k_in
    /// floats), and the model itself. docs/PERFORMANCE.md has measured peaks.
    pub fn memory_limit(mut self, bytes: usize) -> Self {
        self.cfg.memory_limit = Some(bytes);
        self
    }
    /// Opt-in: before featurising a set (each checkpoint's training set, each target set,
    /// each block of a store run), check that the model gives the first and the last example
    /// of the first batch the same results alone as inside the batch, to `tolerance` relative
    /// to the largest magnitude (0: the same bits). The check compares Q and what the projector
    /// consumes (flat gradients, or layer factors for the factored kinds) and fails with
    /// [`crate::Error::BatchDependent`] naming the example; see
    /// [`crate::model::batch_check`]. Cost: two single-example model calls and one batch per
    /// set. Default: off (the built-in models are batch-independent bit for bit).
    pub fn check_batch_independence(mut self, tolerance: f32) -> Self {
        self.cfg.batch_check = Some(tolerance);
        self
    }

    /// Validates and returns the configuration.
    pub fn build(self) -> Result<Trak> {
        let c = &self.cfg;
        if c.proj_dim == 0 && c.projector != ProjectorKind::Identity {
            return Err(invalid("projection dimension k", 0, "k ≥ 1"));
        }
        if c.batch_size == 0 {
            return Err(invalid("batch size", 0, "≥ 1"));
        }
        if c.memory_limit == Some(0) {
            return Err(invalid("memory limit", 0, "≥ 1 byte"));
        }
        c.ridge.validate()?;
        if let Some(t) = c.batch_check.filter(|t| !(t.is_finite() && *t >= 0.0)) {
            return Err(invalid(
                "batch-independence tolerance",
                t,
                "a finite value ≥ 0",
            ));
        }
        match c.projector {
            ProjectorKind::Sparse { s } => {
                project::SparseProjector::new(1, c.proj_dim, s, c.seed)?;
            }
            ProjectorKind::Factored { expansion } => project::factored::check_expansion(expansion)?,
            _ => {}
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

    /// Kernel weighting.
    pub fn weighting(&self) -> Weighting {
        self.weighting
    }

    /// Featurisation batch size.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// The batch-independence check's tolerance, if it is on (see
    /// [`TrakBuilder::check_batch_independence`]).
    pub fn batch_check(&self) -> Option<f32> {
        self.batch_check
    }

    /// The memory limit of in-memory calls, if one was set (see [`TrakBuilder::memory_limit`]).
    pub fn memory_limit(&self) -> Option<usize> {
        self.memory_limit
    }

    /// The same configuration with another kernel weighting.
    pub fn with_weighting(&self, weighting: Weighting) -> Trak {
        Trak {
            weighting,
            ..self.clone()
        }
    }

    /// The same configuration with another ridge rule.
    pub fn with_ridge(&self, ridge: Ridge) -> Result<Trak> {
        ridge.validate()?;
        Ok(Trak {
            ridge,
            ..self.clone()
        })
    }
}
