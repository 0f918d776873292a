//! The built-in model families of the demos, and the SGD settings every model of a family is
//! trained with.

use serde::{Deserialize, Serialize};
use trak::data::Sample;
use trak::models::{Mlp, Sgd};
use trak::output::Margin;
use trak::{Error, Result};

/// A built-in model family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Family {
    /// Multinomial logistic regression, 784 → 10 (p = 7,850).
    LogReg,
    /// One-hidden-layer ReLU MLP, 784 → 128 → 10 (p = 101,770).
    Mlp,
}

impl Family {
    /// `logreg` or `mlp`.
    pub fn name(self) -> &'static str {
        match self {
            Family::LogReg => "logreg",
            Family::Mlp => "mlp",
        }
    }

    /// The family named `logreg` or `mlp`.
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "logreg" => Ok(Family::LogReg),
            "mlp" => Ok(Family::Mlp),
            other => Err(Error::InvalidParameter {
                parameter: "model family",
                value: format!("{other:?}"),
                expected: "logreg or mlp".into(),
            }),
        }
    }

    /// Layer sizes.
    pub fn sizes(self) -> Vec<usize> {
        match self {
            Family::LogReg => vec![784, 10],
            Family::Mlp => vec![784, 128, 10],
        }
    }

    /// The SGD settings used for every model of the family (seed = `seed`).
    pub fn sgd(self, seed: u64) -> Sgd {
        match self {
            Family::LogReg => Sgd {
                lr: 0.1,
                momentum: 0.9,
                weight_decay: 1e-4,
                epochs: 12,
                batch_size: 64,
                seed,
            },
            Family::Mlp => Sgd {
                lr: 0.05,
                momentum: 0.9,
                weight_decay: 5e-4,
                epochs: 12,
                batch_size: 64,
                seed,
            },
        }
    }

    /// Trains a model of the family on `data` (initialisation and order from `seed`).
    pub fn train(self, data: &[Sample], seed: u64) -> Result<Mlp<Margin>> {
        let mut m = Mlp::new(&self.sizes(), Margin, seed)?;
        self.sgd(seed).fit(&mut m, data)?;
        Ok(m)
    }
}
