//! Instrumented implementations of published architectures: their forward passes route every
//! linear layer through the [`crate::Recorder`] under the names of the published checkpoints,
//! and they load those checkpoints unchanged.
//!
//! - [`llama`]: the Llama family (Llama 2/3, SmolLM/SmolLM2, Mistral, Qwen2) from Hugging
//!   Face directories.

pub mod llama;
