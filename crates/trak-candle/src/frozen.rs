//! A linear layer whose weight takes no part in the backward pass.
//!
//! candle 0.11's backward pass computes the gradients of both operands of every matmul,
//! whether or not an operand tracks gradients: through `x · Wᵀ` with a detached `W`, it still
//! computes `xᵀ · δ` (2 flops per weight and position), accumulates it into a freshly zeroed
//! tensor of the weight's size, and throws it away. An attribution pass needs only the
//! gradients of the layer outputs (its taps) and, to reach earlier layers, of the inputs. On
//! SmolLM2-135M that waste was a third of the backward pass's flops and most of its
//! allocations: one query's backward took 0.77 s, 0.2 s without it.
//!
//! [`linear`] computes the same forward values with candle's own matmul (the same call
//! `candle_nn::Linear` makes, so the same bits) inside a custom op whose backward returns
//! `δ · W`, the input's gradient, alone. Other devices than the CPU and other dtypes than f32
//! keep candle's `Linear`.

use std::sync::Arc;

use candle::{CpuStorage, CustomOp1, DType, Device, Layout, Module, Shape, Storage, Tensor};
use candle_nn::Linear;

/// `x · Wᵀ` with `W` (`out × in`) held by the op, not a graph input.
struct FrozenMatmul {
    w: Tensor,
}

impl CustomOp1 for FrozenMatmul {
    fn name(&self) -> &'static str {
        "trak-frozen-linear"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle::Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(data) = storage else {
            candle::bail!("{}: f32 inputs only", self.name());
        };
        let dims = layout.shape().dims();
        let (out, inp) = self.w.dims2()?;
        let Some((_, lead)) = dims.split_last().filter(|(l, _)| **l == inp) else {
            candle::bail!(
                "{}: input {dims:?} for a weight of {out} × {inp}",
                self.name()
            );
        };
        let Some((a, b)) = layout.contiguous_offsets() else {
            candle::bail!("{}: a contiguous input only", self.name());
        };
        let x = Tensor::from_slice(&data[a..b], b - a, &Device::Cpu)?;
        let rows = lead.iter().product::<usize>();
        let y = x.reshape((rows, inp))?.matmul(&self.w.t()?)?;
        let mut shape = lead.to_vec();
        shape.push(out);
        Ok((cpu_copy(&y)?, Shape::from(shape)))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> candle::Result<Option<Tensor>> {
        let out = self.w.dim(0)?;
        let g = grad.contiguous()?.reshape(((), out))?;
        Ok(Some(g.matmul(&self.w)?.reshape(arg.shape())?))
    }
}

/// A contiguous CPU f32 tensor's storage, copied.
fn cpu_copy(t: &Tensor) -> candle::Result<CpuStorage> {
    let (storage, layout) = t.storage_and_layout();
    match (&*storage, layout.contiguous_offsets()) {
        (Storage::Cpu(CpuStorage::F32(v)), Some((a, b))) => Ok(CpuStorage::F32(v[a..b].to_vec())),
        _ => candle::bail!("trak-frozen-linear: expected a contiguous CPU f32 result"),
    }
}

/// `x · Wᵀ + b` with `w` and `b` taking no part in the backward pass (see the module docs);
/// `x` is `… × in`.
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> candle::Result<Tensor> {
    let cpu_f32 = |t: &Tensor| t.device().is_cpu() && t.dtype() == DType::F32;
    if !(cpu_f32(x) && cpu_f32(w)) {
        return Linear::new(w.detach(), b.map(Tensor::detach)).forward(x);
    }
    let op = FrozenMatmul {
        w: w.detach().contiguous()?,
    };
    let y = x.contiguous()?.apply_op1_arc(Arc::new(Box::new(op)))?;
    match b {
        Some(b) => y.broadcast_add(&b.detach()),
        None => Ok(y),
    }
}

#[cfg(test)]
mod tests {
    use candle::{Device, Tensor, Var};
    use candle_nn::{Linear, Module};

    fn seeded(shape: (usize, usize), seed: u32) -> Vec<f32> {
        (0..shape.0 * shape.1)
            .map(|i| (((i as u32).wrapping_mul(2_654_435_761) ^ seed) % 1000) as f32 / 500.0 - 1.0)
            .collect()
    }

    /// The same forward bits as candle's `Linear`, the same input gradient, and no gradient
    /// for the weight (candle's matmul computes one even for a detached weight).
    #[test]
    fn frozen_linear_is_candles_linear_without_the_weight_gradient() {
        let dev = Device::Cpu;
        let w = Tensor::from_vec(seeded((7, 5), 1), (7, 5), &dev).unwrap();
        let b = Tensor::from_vec(seeded((1, 7), 2), 7, &dev).unwrap();
        let x = Var::from_vec(seeded((6, 5), 3), (2, 3, 5), &dev).unwrap();
        let reference = Linear::new(w.clone(), Some(b.clone())).forward(&x).unwrap();
        let y = super::linear(&x, &w, Some(&b)).unwrap();
        let bits = |t: &Tensor| {
            let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            v.into_iter().map(f32::to_bits).collect::<Vec<_>>()
        };
        assert_eq!(bits(&y), bits(&reference));
        let seed = Tensor::from_vec(seeded((6, 7), 4), (2, 3, 7), &dev).unwrap();
        let g_ref = reference
            .mul(&seed)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let g = y.mul(&seed).unwrap().sum_all().unwrap().backward().unwrap();
        let gx = |g: &candle::backprop::GradStore| g.get(x.as_tensor()).cloned().unwrap();
        assert_eq!(bits(&gx(&g)), bits(&gx(&g_ref)));
        // candle stores the weight's gradient under its transposed view (5 × 7).
        let weight_grad = |g: &candle::backprop::GradStore| {
            g.get_ids()
                .any(|id| g.get_id(*id).is_some_and(|t| t.dims() == [5, 7]))
        };
        assert!(weight_grad(&g_ref), "candle computes the weight's gradient");
        assert!(!weight_grad(&g), "the frozen linear does not");
    }
}
