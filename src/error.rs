//! The crate's error type.
//!
//! Every fallible public function returns [`Result`]. Bad input (shapes, labels, non-finite
//! numbers, empty sets, unknown checkpoints, unreadable files) is reported as a specific
//! [`Error`] variant, never as a panic.

use std::path::PathBuf;

/// Which set of examples an operation was working on (named in errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExampleSet {
    /// The training set (features Φ and Q).
    Training,
    /// A target set (features Ψ only).
    Target,
}

impl std::fmt::Display for ExampleSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ExampleSet::Training => "training",
            ExampleSet::Target => "target",
        })
    }
}

/// Shorthand for `std::result::Result<T, trak::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `trak`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A parameter is outside its domain (k = 0, batch size 0, negative ridge, a shard index
    /// past the shard count, …).
    #[error("invalid {parameter}: got {value}, expected {expected}")]
    InvalidParameter {
        /// The parameter, as the documentation names it (e.g. "projection dimension k").
        parameter: &'static str,
        /// The value that was given, written out.
        value: String,
        /// The domain it must lie in.
        expected: String,
    },

    /// An index into a collection (dataset rows, blocks of a run) is past its end.
    #[error("{what} {index} is out of range: there are {len}")]
    OutOfRange {
        /// What is indexed.
        what: &'static str,
        /// The index given.
        index: usize,
        /// The number of elements.
        len: usize,
    },

    /// A factored projector (`ProjectorKind::FACTORED`) was asked of a model whose `Model::factored()` is `None`.
    #[error(
        "the factored projector needs a model whose Model::factored() returns its \
         FactoredModel view; this model has none"
    )]
    NoFactoredView,

    /// A factored model's linear layers do not cover its parameters exactly.
    #[error(
        "factored projection: the linear layers cover {covered} parameters but the model has \
         {params}; every parameter must belong to exactly one layer"
    )]
    LayerCoverage {
        /// Parameters covered by the layers.
        covered: usize,
        /// The model's parameter count.
        params: usize,
    },

    /// An operation that only some projectors support was asked of another.
    #[error("{operation} is not supported with the {projector} projector")]
    UnsupportedProjector {
        /// The projector in use, as `ProjectorKind`'s `Display` writes it (e.g. "factored
        /// (expansion 32)").
        projector: String,
        /// What was asked (e.g. "prefix(k)").
        operation: &'static str,
    },

    /// The LDS is undefined: every target has constant predictions or constant outputs.
    #[error("LDS undefined: every target has constant predictions or outputs over the subsets")]
    LdsUndefined,

    /// An array or slice does not have the shape the operation needs.
    #[error("shape mismatch in {what}: expected {expected}, got {got}")]
    ShapeMismatch {
        /// Which argument or buffer.
        what: &'static str,
        /// The expected shape, written out.
        expected: String,
        /// The shape that was passed.
        got: String,
    },

    /// A set that must hold at least one element is empty.
    #[error("empty input: {0}")]
    Empty(&'static str),

    /// A model returned a NaN or infinite output gradient.
    #[error(
        "non-finite output gradient for {set} example {example} (checkpoint {checkpoint}, parameter {param})"
    )]
    NonFiniteGradient {
        /// The set the example belongs to.
        set: ExampleSet,
        /// Index of the offending example in the set that was passed.
        example: usize,
        /// Checkpoint id.
        checkpoint: u64,
        /// Index of the first offending parameter.
        param: usize,
    },

    /// A model returned a NaN or infinite Q value (∂loss/∂output).
    #[error("non-finite Q value for training example {example} (checkpoint {checkpoint})")]
    NonFiniteQ {
        /// Index of the offending training example.
        example: usize,
        /// Checkpoint id.
        checkpoint: u64,
    },

    /// Non-finite numbers in user-provided input data or parameters.
    #[error("non-finite value in {what} at index {index}")]
    NonFiniteInput {
        /// What contained the value.
        what: &'static str,
        /// Flat index of the first offending value.
        index: usize,
    },

    /// A label or regression target does not fit the model's output function.
    #[error("invalid target for example {example}: {reason}")]
    InvalidTarget {
        /// Index of the example in the batch or dataset that was passed.
        example: usize,
        /// What is wrong with it.
        reason: String,
    },

    /// An example's input does not fit the model: e.g. a token outside the vocabulary, or a
    /// sequence longer than the context.
    #[error("invalid input in example {example}: {reason}")]
    InvalidExample {
        /// Index of the example in the set that was passed (training set, targets, probe).
        example: usize,
        /// What is wrong with it.
        reason: String,
    },

    /// A model's layer factors (activations or output gradients, for the factored projector)
    /// contain NaN or ±∞.
    #[error(
        "non-finite {what} in layer {layer} for {set} example {example} at checkpoint {checkpoint} (entry {index})"
    )]
    NonFiniteFactor {
        /// The set the example belongs to.
        set: ExampleSet,
        /// Index of the example in the set.
        example: usize,
        /// Checkpoint id.
        checkpoint: u64,
        /// 0-based linear layer (in the order of `FactoredModel::linear_layers`).
        layer: usize,
        /// "activation" or "output gradient".
        what: &'static str,
        /// Index of the offending entry within the example's factor row.
        index: usize,
    },

    /// Training diverged: the minibatch loss became NaN or infinite.
    #[error("training diverged in epoch {epoch} (loss {loss}); lower the learning rate")]
    Diverged {
        /// 0-based epoch.
        epoch: usize,
        /// The non-finite loss.
        loss: f32,
    },

    /// Scoring asked for a checkpoint id that was never featurised.
    #[error("checkpoint {0} was not featurised")]
    UnknownCheckpoint(u64),

    /// The same checkpoint id was given twice where each must appear once.
    #[error("checkpoint {0} given more than once")]
    DuplicateCheckpoint(u64),

    /// The training set passed for a checkpoint has a different size from earlier ones.
    #[error("training set size mismatch: earlier checkpoints used {expected} examples, got {got}")]
    TrainSizeMismatch {
        /// Size used by earlier checkpoints.
        expected: usize,
        /// Size passed now.
        got: usize,
    },

    /// The regularised kernel matrix ΦᵀΦ + λI is not (numerically) positive definite.
    #[error(
        "kernel matrix of checkpoint {checkpoint} is not positive definite (pivot {pivot}, λ = {lambda:e}); \
         with λ = 0 this happens when k ≥ n or features are collinear: use a ridge λ > 0"
    )]
    NotPositiveDefinite {
        /// Checkpoint id.
        checkpoint: u64,
        /// Index of the failing pivot.
        pivot: usize,
        /// The ridge that was used.
        lambda: f64,
    },

    /// A file could not be opened, read, written or renamed.
    #[error("cannot access {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A file is not in the format its reader expects (e.g. not a gzip stream, or a gzip
    /// stream that is corrupt or ends early). The file could be read.
    #[error("{path} is not a {format}: {reason}")]
    WrongFormat {
        /// The file.
        path: PathBuf,
        /// The format the reader expects, e.g. "gzip-compressed MNIST CSV file".
        format: &'static str,
        /// What was found instead.
        reason: String,
    },

    /// A file was read but its content is malformed.
    #[error("malformed {path} (line {line}): {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A stored file failed its integrity check: the checksum over its bytes does not match
    /// the one it carries (a flipped bit, a torn or truncated write, or not a trak file).
    #[error("checksum mismatch in {path}: the file is corrupted or is not a trak store file")]
    Checksum {
        /// The file.
        path: PathBuf,
    },

    /// A stored file passed its checksum but its content is not what this reader expects
    /// (wrong kind of file, wrong length, inconsistent header, undecodable payload).
    #[error("corrupted store file {path}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// A stored file was written by an incompatible version of the store format.
    #[error(
        "{path} has store format version {found}; this build of trak reads version {supported}"
    )]
    FormatVersion {
        /// The file.
        path: PathBuf,
        /// The version in the file.
        found: u32,
        /// The version this build reads and writes.
        supported: u32,
    },

    /// An existing run (or one of its checkpoints or target sets) was opened with a different
    /// configuration, model or data from the one it was created with.
    #[error("{path}: the stored run does not match this request: {what}")]
    RunMismatch {
        /// The run directory or file holding the conflicting record.
        path: PathBuf,
        /// What differs, with both values.
        what: String,
    },

    /// A step needs stored data that has not been computed yet (e.g. merging while blocks of a
    /// shard are missing).
    #[error("run {path} is incomplete: {what}")]
    Incomplete {
        /// The run directory.
        path: PathBuf,
        /// What is missing.
        what: String,
    },

    /// A memory budget (the store's [`crate::store::ScoreOptions`] budget, or the in-memory
    /// pipeline's [`crate::TrakBuilder::memory_limit`]) is too small for what was asked.
    #[error("memory budget of {budget} bytes is too small: {needed} bytes needed ({reason})")]
    MemoryBudget {
        /// The budget that was given.
        budget: usize,
        /// The least that would work.
        needed: usize,
        /// What the memory is for, and how to need less.
        reason: String,
    },

    /// The allocator refused a buffer the pipeline planned (the request exceeds what the
    /// machine can give).
    #[error("cannot allocate {bytes} bytes for {what}")]
    OutOfMemory {
        /// What the buffer is for.
        what: &'static str,
        /// Its size in bytes (saturated at `usize::MAX` if the size itself overflows).
        bytes: usize,
    },

    /// A path that must be a directory (a run) exists as something else.
    #[error("{path} exists and is not a directory")]
    NotADirectory {
        /// The path.
        path: PathBuf,
    },

    /// A kernel weighting needs the curvature r = ∂²L/∂f² of every training example, and the
    /// model does not give it (its `Model::output_curvature` is the default, or its output
    /// function's `curvature` is `None`).
    #[error(
        "the Gauss-Newton weighting needs each training example's curvature r = ∂²L/∂f²; \
         this model does not give it (implement Model::output_curvature, or \
         OutputFn::curvature for the built-in models)"
    )]
    NoCurvature,

    /// An environment variable the process depends on (a SLURM job array's, for
    /// [`crate::Shard::from_env`]) is missing, malformed or inconsistent with the others.
    #[error("environment variable {variable} ({}): {reason}", value.as_deref().map_or("unset".to_string(), |v| format!("{v:?}")))]
    Environment {
        /// The variable.
        variable: &'static str,
        /// Its value, if set.
        value: Option<String>,
        /// What is wrong.
        reason: String,
    },

    /// Metagradients need Hessian-vector products of the training loss in the model's raw
    /// outputs, and the output function does not give them (its `OutputFn::loss_hvp` is the
    /// default).
    #[error(
        "metagradients need the training loss's Hessian-vector products in the raw outputs; \
         this output function does not give them (implement OutputFn::loss_hvp)"
    )]
    NoLossHessian,

    /// Replaying a segment of the training run (metagradients recompute the states between
    /// stored checkpoints) did not reproduce the next checkpoint bit for bit: the model's
    /// weighted loss gradient is not a deterministic function of its parameters and batch,
    /// which exact metagradients need.
    #[error(
        "training step {step} gave different parameters when replayed: the model's weighted \
         loss gradient is not deterministic, which metagradients need"
    )]
    NotReplayable {
        /// The step (0-based, over all epochs) whose replay differed.
        step: usize,
    },

    /// The Gauss-Newton weighting was asked of a store checkpoint whose features were
    /// imported ([`crate::Run::import_npy`], [`crate::Run::import_block`]): imported
    /// features and Q carry no curvature, so its weighted Gram matrix cannot be computed.
    #[error(
        "checkpoint {checkpoint} holds imported features, which carry no curvature \
         r = ∂²L/∂f²: the Gauss-Newton weighting cannot be computed for it (score it under \
         Weighting::Q or Weighting::None, or featurise it from its model with Run::featurize)"
    )]
    ImportedWithoutCurvature {
        /// The imported checkpoint.
        checkpoint: u64,
    },

    /// The Gauss-Newton weighting was asked of features that were computed (or read back from
    /// a store run merged under another weighting) without the curvature r: switching the
    /// weighting of [`crate::TrainFeatures`] cannot create it.
    #[error(
        "checkpoint {checkpoint}'s features were computed without the curvature r = ∂²L/∂f² \
         that the Gauss-Newton weighting needs: featurise under Weighting::GaussNewton \
         (TrakBuilder::weighting), or merge the store run under it (Run::with_weighting) and \
         read Run::train_features from that"
    )]
    CurvatureNotRecorded {
        /// The checkpoint.
        checkpoint: u64,
    },

    /// A kernel weight (Q or r of a training example) is negative or not finite: the
    /// weighted Gram matrix ΦᵀWΦ would not be positive semi-definite.
    #[error(
        "kernel weight {value} of training example {example} (checkpoint {checkpoint}) is not a \
         finite number ≥ 0 (the default Q weighting needs Q ≥ 0; for a regression output, whose Q \
         is the signed residual, use Weighting::GaussNewton or Weighting::None)"
    )]
    BadKernelWeight {
        /// Index of the training example.
        example: usize,
        /// Checkpoint id.
        checkpoint: u64,
        /// The weight.
        value: f32,
    },

    /// A model's result for an example depends on the other examples of its batch, found by
    /// the batch-independence check ([`crate::model::batch_check`], opt-in through
    /// [`crate::TrakBuilder::check_batch_independence`]). [`crate::Model`] requires results
    /// that do not depend on how examples are batched: scores would change with the batch size.
    #[error(
        "the model's {what} for example {example} depends on its batch: entry {index} is \
         {alone:e} computed alone and {in_batch:e} inside a batch of {batch} (tolerance \
         {tolerance:e} × the largest magnitude); a Model's results must not depend on how \
         examples are batched (see trak::model::batch_check)"
    )]
    BatchDependent {
        /// What differs: "output gradient", "Q", or "layer 1 activations" / "layer 1
        /// output gradients" for a factored model.
        what: String,
        /// Index of the example in the set being featurised (in the batch given to
        /// [`crate::model::batch_check::check_batch_independence`]).
        example: usize,
        /// The first entry that differs.
        index: usize,
        /// Its value with the example computed alone.
        alone: f32,
        /// Its value inside the batch.
        in_batch: f32,
        /// The batch's size.
        batch: usize,
        /// The relative tolerance of the check.
        tolerance: f32,
    },

    /// A framework that the caller drives reported an error: a deep-learning framework
    /// through a model adapter (candle, through the `trak-candle` crate), or the plotting
    /// library of the workspace's demo pictures. The framework's own error is the source.
    #[error("{framework} error while {context}: {}", one_line(source.as_ref()))]
    Framework {
        /// The framework, e.g. "candle".
        framework: &'static str,
        /// What the adapter was doing (e.g. "forward pass of the discovery batch").
        context: String,
        /// The framework's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// A model checkpoint (a weights file, or the configuration that comes with it) does not
    /// fit the architecture that reads it: a missing tensor, a shape that disagrees with the
    /// configuration, an unknown architecture, a bad configuration field, a tensor type or
    /// quantisation the reader does not handle. The problem names the tensor or the field.
    #[error("checkpoint {path}: {problem}")]
    Checkpoint {
        /// The file (or directory) read.
        path: PathBuf,
        /// What does not fit.
        problem: CheckpointProblem,
    },

    /// A model adapter was asked to attribute a layer it cannot attribute correctly (shared
    /// weights, a batch-dependent layer, a parameter type it does not handle).
    #[error("layer {layer} cannot be attributed: {reason}")]
    Unattributable {
        /// The layer's name, as the network names it.
        layer: String,
        /// Why.
        reason: Unattributable,
    },
}

/// What does not fit in a model checkpoint (see [`Error::Checkpoint`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointProblem {
    /// A tensor the architecture needs is not in the file.
    #[error("tensor {name} is missing")]
    MissingTensor {
        /// The tensor's name in the file's naming scheme.
        name: String,
    },
    /// A tensor's shape disagrees with the configuration.
    #[error("tensor {name} has shape {found:?}, but the configuration implies {expected:?}")]
    TensorShape {
        /// The tensor's name.
        name: String,
        /// The shape the configuration implies.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },
    /// A tensor's element type (or quantisation) is not one the reader handles.
    #[error("tensor {name} is stored as {found}, which is not supported ({supported})")]
    TensorType {
        /// The tensor's name.
        name: String,
        /// The type or quantisation found (e.g. "u8", "Q2K").
        found: String,
        /// What is supported.
        supported: String,
    },
    /// The configuration names an architecture this reader does not implement.
    #[error("architecture {found:?} is not supported (supported: {supported})")]
    UnknownArchitecture {
        /// The architecture the file declares.
        found: String,
        /// The ones this reader implements.
        supported: String,
    },
    /// A configuration field is missing, malformed or has a value the reader does not
    /// implement.
    #[error("configuration field {field}: {reason}")]
    ConfigField {
        /// The field's name (e.g. "num_key_value_heads", "rope_scaling.rope_type").
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The file holds a tensor the configuration does not account for (e.g. a block past
    /// the configured block count).
    #[error("tensor {name} is not part of the configured model: {reason}")]
    UnexpectedTensor {
        /// The tensor's name in the file's naming scheme.
        name: String,
        /// Why the configuration does not account for it.
        reason: String,
    },
    /// A tensor holds NaN or ±∞.
    #[error("tensor {name} holds a non-finite value (NaN or ±∞) at flat index {index}")]
    NonFiniteTensor {
        /// The tensor's name.
        name: String,
        /// The flat index of the first non-finite value.
        index: usize,
    },
    /// The file is shorter or longer than its own header says: truncated (an interrupted
    /// download or copy) or corrupt.
    #[error(
        "the file is {found} bytes, but its header describes {expected} bytes: it is truncated \
         or corrupt"
    )]
    FileSize {
        /// The file's size.
        found: u64,
        /// The size its header implies.
        expected: u64,
    },
}

/// Why a model adapter refuses a layer (see [`Error::Unattributable`]).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Unattributable {
    /// The layer's weight is also used elsewhere in the forward pass (tied or shared weights,
    /// or the same layer applied twice): per-layer factors would count it twice.
    SharedWeights {
        /// The other use: a layer name, or the same name for a repeated call.
        with: String,
    },
    /// The layer's output depends on the other examples of the batch (BatchNorm in training
    /// mode): per-example gradients from a batched pass would be wrong.
    BatchDependent,
    /// A parameter or activation has a floating-point type the adapter does not compute in;
    /// upcast the checkpoint to f32 when loading it.
    DType {
        /// The type found, e.g. "bf16".
        found: String,
    },
    /// A layer configuration the factored view does not support (e.g. grouped or dilated
    /// convolutions).
    Configuration {
        /// The unsupported setting, written out.
        what: String,
    },
    /// The framework's backward pass disagrees with central finite differences of the model
    /// output with respect to this layer's output: an op between this layer and the output
    /// has a wrong gradient, so every per-example gradient through it would be wrong.
    GradientCheck {
        /// The directional derivative the backward pass gives.
        backward: f64,
        /// The same derivative by central finite differences.
        finite_difference: f64,
    },
    /// No gradient reaches this parameter: the forward pass does not compute with it (it was
    /// loaded as a plain tensor), or every path from it to the output goes through an op
    /// without a backward pass (candle-nn 0.11's fused `rms_norm`, `layer_norm`,
    /// `softmax_last_dim` and `rope` have none).
    NoGradient,
    /// The parameter's gradient disagrees with central finite differences of the model
    /// output with respect to the parameter itself: an op between it and the output has a
    /// wrong or missing backward pass on some of the paths, so the gradient is partial.
    ParameterGradientCheck {
        /// The directional derivative the backward pass gives.
        backward: f64,
        /// The same derivative by central finite differences.
        finite_difference: f64,
    },
    /// The layer's output holds NaN or ±∞ on a probe example: a weight of this layer, or
    /// something before it, is not finite.
    NonFinite {
        /// The probe example.
        example: usize,
        /// The first non-finite entry of its output (flattened).
        entry: usize,
    },
}

impl std::fmt::Display for Unattributable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unattributable::SharedWeights { with } => {
                write!(
                    f,
                    "its weight is shared with {with} (tied weights are not supported)"
                )
            }
            Unattributable::BatchDependent => f.write_str(
                "its output depends on the rest of the batch (e.g. BatchNorm in training mode); \
                 use the layer in evaluation mode",
            ),
            Unattributable::DType { found } => {
                write!(
                    f,
                    "it computes in {found}, not f32; upcast the checkpoint to f32"
                )
            }
            Unattributable::Configuration { what } => write!(f, "unsupported {what}"),
            Unattributable::GradientCheck {
                backward,
                finite_difference,
            } => write!(
                f,
                "the backward pass disagrees with finite differences at its output \
                 (directional derivative {backward:.6e} by backward, {finite_difference:.6e} \
                 by finite differences): an op after this layer has a wrong gradient"
            ),
            Unattributable::NoGradient => f.write_str(
                "no gradient reaches it: the forward pass does not compute with this variable, \
                 or every path to the output goes through an op without a backward pass \
                 (candle-nn's fused rms_norm, layer_norm, softmax_last_dim, rope)",
            ),
            Unattributable::ParameterGradientCheck {
                backward,
                finite_difference,
            } => write!(
                f,
                "its gradient disagrees with finite differences (directional derivative \
                 {backward:.6e} by backward, {finite_difference:.6e} by finite differences): an \
                 op between it and the output has a missing or wrong backward pass on some \
                 paths, so the gradient would be partial"
            ),
            Unattributable::NonFinite { example, entry } => write!(
                f,
                "its output holds NaN or ±∞ (probe example {example}, entry {entry}): a weight \
                 of this layer, or an input or layer before it, is not finite"
            ),
        }
    }
}

/// The message of a framework error on one line: its lines up to the first line of a
/// backtrace (frames such as `   0: std::backtrace::…`, or `stack backtrace:`), joined by
/// ": ". candle appends a captured backtrace to its message when `RUST_BACKTRACE` is set;
/// the whole error, backtrace included, stays reachable as the source.
fn one_line(e: &(dyn std::error::Error + Send + Sync)) -> String {
    let text = e.to_string();
    let frame = |l: &str| {
        let t = l.trim_start();
        t.starts_with("stack backtrace")
            || t.split_once(':')
                .is_some_and(|(n, _)| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
    };
    let lines: Vec<&str> = text
        .lines()
        .take_while(|l| !frame(l))
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines.join(": ")
}

/// Shorthand for building an [`Error::InvalidParameter`].
pub(crate) fn invalid(
    parameter: &'static str,
    value: impl std::fmt::Display,
    expected: impl ToString,
) -> Error {
    Error::InvalidParameter {
        parameter,
        value: value.to_string(),
        expected: expected.to_string(),
    }
}

/// Shorthand for building a [`Error::ShapeMismatch`].
pub(crate) fn shape_err(what: &'static str, expected: impl ToString, got: impl ToString) -> Error {
    Error::ShapeMismatch {
        what,
        expected: expected.to_string(),
        got: got.to_string(),
    }
}
