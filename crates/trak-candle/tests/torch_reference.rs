//! The adapter against PyTorch itself: a CNN trained in PyTorch (`data/torch_cnn.py`),
//! loaded by its state-dict names from safetensors, gives PyTorch's margins and per-example
//! gradients (computed by PyTorch's autograd, stored in `data/torch_cnn_reference.*`).

#[path = "../examples/support/mnist_cnn.rs"]
mod mnist_cnn;
#[path = "../examples/support/torch_ref.rs"]
mod torch_ref;

use trak::output::Margin;
use trak_candle::{CandleModel, SampleCollate};

#[test]
fn margins_and_gradients_match_pytorch() {
    let net = torch_ref::torch_cnn().unwrap();
    let (train, _, _) = torch_ref::torch_split().unwrap();
    let model = CandleModel::builder(&net, SampleCollate::new(&[1, 28, 28]), Margin)
        .build(&train[..8])
        .unwrap();
    let c = torch_ref::check(&net, &model).unwrap();
    assert!(
        c.margins_max_abs_err < 1e-4,
        "margins: {}",
        c.margins_max_abs_err
    );
    assert!(c.grads_rel_err < 1e-5, "gradients: {}", c.grads_rel_err);
}
