//! How candle's errors become [`trak::Error`]s ([`CandleContext`]).
//!
//! Every candle error is reported as [`trak::Error::Framework`] with `framework = "candle"`,
//! the adapter's step as context and candle's error as the source. A refusal recorded by the
//! [`crate::Recorder`] (shared weights, a batch-dependent layer, a non-f32 layer) takes
//! precedence: the forward pass is stopped with a candle error, and the typed
//! [`trak::Error::Unattributable`] is what the caller sees.

/// Extension for `candle::Result`: attach what was being done and convert to
/// [`trak::Error::Framework`], so candle code in a `trak::Result` function can use `?`:
///
/// ```
/// use trak_candle::CandleContext;
/// fn zeros() -> trak::Result<candle::Tensor> {
///     candle::Tensor::zeros(3, candle::DType::F32, &candle::Device::Cpu).ctx("making zeros")
/// }
/// # assert_eq!(zeros().unwrap().dims(), &[3]);
/// ```
pub trait CandleContext<T> {
    /// Converts a candle error into [`trak::Error::Framework`] with `context`.
    fn ctx(self, context: &str) -> trak::Result<T>;
}

impl<T> CandleContext<T> for candle::Result<T> {
    fn ctx(self, context: &str) -> trak::Result<T> {
        self.map_err(|e| framework(context, e))
    }
}

/// [`trak::Error::Framework`] for a candle error.
pub(crate) fn framework(context: &str, source: candle::Error) -> trak::Error {
    trak::Error::Framework {
        framework: "candle",
        context: context.to_string(),
        source: Box::new(source),
    }
}

/// [`trak::Error::Unattributable`] for `layer`.
pub(crate) fn refuse(layer: &str, reason: trak::Unattributable) -> trak::Error {
    trak::Error::Unattributable {
        layer: layer.to_string(),
        reason,
    }
}
