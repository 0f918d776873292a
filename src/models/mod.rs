//! Built-in models with analytic, batched per-example gradients, and their trainer.
//!
//! [`Mlp`] is a fully connected ReLU network with any number of hidden layers (including
//! none: with no hidden layer it *is* multinomial logistic regression under [`Margin`],
//! binary logistic regression under [`Logistic`] and linear regression under
//! [`Regression`]). It is generic over its [`OutputFn`], which fixes both the attributed
//! output f and the training loss. [`Sgd`] trains it with seeded minibatch SGD, with optional per-example loss weights; any
//! model that implements [`Trainable`] can be trained by it, and differentiated through
//! training by [`crate::metagrad`].
//!
//! [`Margin`]: crate::output::Margin
//! [`Logistic`]: crate::output::Logistic
//! [`Regression`]: crate::output::Regression
//! [`OutputFn`]: crate::output::OutputFn

mod mlp;
pub(crate) mod sgd;
mod trainable;

pub use mlp::{Layer, Mlp, MlpHvp};
pub use sgd::{Sgd, TrainReport};
pub use trainable::{BatchHvp, Trainable};
