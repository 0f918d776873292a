//! Seeded weights for the examples' and tests' candle networks. candle's CPU initialisation
//! is not seedable, so a network built with `candle_nn::linear` differs from run to run; every
//! network here is built that way and then overwritten from a ChaCha8 stream, so that the
//! same seed gives the same weights (and a failing test fails again).
// Shared by several examples and tests; not each uses every item.
#![allow(dead_code)]

use candle::{Device, Tensor};
use candle_nn::VarMap;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// How one variable is filled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fill {
    /// Every entry the same value (e.g. a norm's scale 1 and shift 0); draws nothing.
    Const(f32),
    /// U(−b, b).
    Uniform(f32),
}

/// Overwrites every variable of `map` from a ChaCha8 stream of `seed`, visiting them sorted by
/// name: PyTorch's default for linear and convolutional layers, U(±1/√fan_in) for weights and
/// biases, fan_in = the product of a weight's dimensions after the first (a bias takes its
/// sibling `….weight`'s).
pub fn seed_vars(map: &VarMap, seed: u64) -> candle::Result<()> {
    seed_vars_with(map, seed, |_, _| None)
}

/// [`seed_vars`] where `rule(name, dims)` may choose another [`Fill`] for a variable.
pub fn seed_vars_with(
    map: &VarMap,
    seed: u64,
    rule: impl Fn(&str, &[usize]) -> Option<Fill>,
) -> candle::Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let data = map.data().lock().unwrap();
    let mut vars: Vec<(&String, &candle::Var)> = data.iter().collect();
    vars.sort_by(|a, b| a.0.cmp(b.0));
    for (name, var) in &vars {
        let fan_in = |dims: &[usize]| dims.iter().skip(1).product::<usize>().max(1);
        let fill = rule(name, var.dims()).unwrap_or_else(|| {
            let weight = name
                .strip_suffix("bias")
                .and_then(|stem| data.get(&format!("{stem}weight")));
            let dims = weight.map_or(var.dims(), |w| w.dims());
            let fan = if dims.len() == 1 {
                dims[0]
            } else {
                fan_in(dims)
            };
            Fill::Uniform(1.0 / (fan as f32).sqrt())
        });
        let n = var.elem_count();
        let values: Vec<f32> = match fill {
            Fill::Const(v) => vec![v; n],
            Fill::Uniform(b) => (0..n).map(|_| rng.random_range(-b..b)).collect(),
        };
        let t = Tensor::from_vec(values, var.dims(), &Device::Cpu)?.to_dtype(var.dtype())?;
        var.set(&t)?;
    }
    Ok(())
}
