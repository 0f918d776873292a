//! What the adapter cannot attribute correctly is refused with a typed error naming the
//! layer; framework errors carry candle's error.

mod common;

use candle::{DType, Device, Tensor};
use candle_nn::{BatchNorm, Conv2d, Conv2dConfig, Linear, VarBuilder, VarMap};
use common::{MlpNet, samples, seed_vars};
use trak::output::Margin;
use trak::{Error, Unattributable};
use trak_candle::{CandleModel, Network, Recorder, SampleCollate};

fn build<N: Network>(net: N, d: usize) -> trak::Result<()> {
    let data = samples(8, d, 3, 0);
    CandleModel::builder(net, SampleCollate::new(&[d]), Margin)
        .build(&data)
        .map(|_| ())
}

fn refusal(r: trak::Result<()>) -> (String, Unattributable) {
    match r {
        Err(Error::Unattributable { layer, reason }) => (layer, reason),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn lin(i: usize, o: usize, vb: &VarBuilder, name: &str) -> Linear {
    candle_nn::linear(i, o, vb.pp(name)).unwrap()
}

/// Two layers built on one weight tensor.
struct Tied(Linear, Linear);
impl Network for Tied {
    fn forward(&self, x: &Tensor, rec: &mut Recorder) -> candle::Result<Tensor> {
        let h = rec.linear("enc", &self.0, x)?.relu()?;
        rec.linear("dec", &self.1, &h)
    }
}

#[test]
fn tied_weights_are_refused() {
    let map = VarMap::new();
    let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
    let enc = lin(3, 3, &vb, "enc");
    let dec = Linear::new(enc.weight().clone(), None);
    seed_vars(&map, 0).unwrap();
    let (layer, reason) = refusal(build(Tied(enc, dec), 3));
    assert_eq!(layer, "dec");
    assert_eq!(reason, Unattributable::SharedWeights { with: "enc".into() });
}

/// One layer applied twice.
struct Twice(Linear);
impl Network for Twice {
    fn forward(&self, x: &Tensor, rec: &mut Recorder) -> candle::Result<Tensor> {
        let h = rec.linear("block", &self.0, x)?.relu()?;
        rec.linear("block", &self.0, &h)
    }
}

#[test]
fn a_layer_called_twice_is_refused() {
    let map = VarMap::new();
    let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
    let twice = Twice(lin(3, 3, &vb, "b"));
    seed_vars(&map, 0).unwrap();
    let (layer, reason) = refusal(build(twice, 3));
    assert_eq!(layer, "block");
    assert!(matches!(reason, Unattributable::SharedWeights { .. }));
}

/// BatchNorm in training mode, through the recorder or behind its back.
struct Bn {
    fc: Linear,
    bn: BatchNorm,
    through_recorder: bool,
}
impl Network for Bn {
    fn forward(&self, x: &Tensor, rec: &mut Recorder) -> candle::Result<Tensor> {
        let h = if self.through_recorder {
            rec.batch_norm("bn", &self.bn, x, true)?
        } else {
            self.bn.forward_train(x)?
        };
        rec.linear("fc", &self.fc, &h)
    }
}

#[test]
fn batch_norm_in_training_mode_is_refused() {
    for through_recorder in [true, false] {
        let map = VarMap::new();
        let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
        let bn = candle_nn::batch_norm(4, 1e-5, vb.pp("bn")).unwrap();
        let net = Bn {
            fc: lin(4, 3, &vb, "fc"),
            bn,
            through_recorder,
        };
        seed_vars(&map, 0).unwrap();
        let (layer, reason) = refusal(build(net, 4));
        assert_eq!(reason, Unattributable::BatchDependent);
        let want = if through_recorder {
            "bn"
        } else {
            "between the network input and fc"
        };
        assert_eq!(layer, want);
    }
}

#[test]
fn non_f32_weights_are_refused() {
    let map = VarMap::new();
    let vb = VarBuilder::from_varmap(&map, DType::BF16, &Device::Cpu);
    let net = MlpNet {
        layers: vec![lin(5, 3, &vb, "fc0")],
    };
    seed_vars(&map, 0).unwrap();
    let (layer, reason) = refusal(build(net, 5));
    assert_eq!(layer, "fc0");
    assert_eq!(
        reason,
        Unattributable::DType {
            found: "bf16".into()
        }
    );
}

struct Grouped(Conv2d, Linear);
impl Network for Grouped {
    fn forward(&self, x: &Tensor, rec: &mut Recorder) -> candle::Result<Tensor> {
        let x = x.reshape(((), 2, 2, 2))?;
        let h = rec.conv2d("grouped", &self.0, &x)?.flatten_from(1)?;
        rec.linear("fc", &self.1, &h)
    }
}

#[test]
fn grouped_convolutions_are_refused() {
    let map = VarMap::new();
    let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
    let cfg = Conv2dConfig {
        groups: 2,
        ..Default::default()
    };
    let conv = candle_nn::conv2d(2, 2, 1, cfg, vb.pp("g")).unwrap();
    let grouped = Grouped(conv, lin(8, 3, &vb, "fc"));
    seed_vars(&map, 0).unwrap();
    let (layer, reason) = refusal(build(grouped, 8));
    assert_eq!(layer, "grouped");
    assert!(matches!(reason, Unattributable::Configuration { .. }));
}

#[test]
fn unknown_layer_names_and_unused_variables_are_invalid_parameters() {
    let map = VarMap::new();
    let net = MlpNet::with_vars(&[5, 4, 3], &map);
    let data = samples(8, 5, 3, 0);
    let r = CandleModel::builder(&net, SampleCollate::new(&[5]), Margin)
        .layers(["fc9"])
        .build(&data);
    assert!(matches!(
        r,
        Err(Error::InvalidParameter {
            parameter: "layer name",
            ..
        })
    ));
    // Weights loaded as plain tensors are not the variables listed: nothing would be
    // differentiated, so the builder refuses instead of returning zeros.
    let copy = MlpNet {
        layers: net
            .layers
            .iter()
            .map(|l| Linear::new(l.weight().copy().unwrap(), None))
            .collect(),
    };
    let vars = candle_nn::VarMap::new();
    let _ = MlpNet::with_vars(&[5, 4, 3], &vars);
    let r = CandleModel::builder(&copy, SampleCollate::new(&[5]), Margin)
        .all_parameters_of(&vars)
        .build(&data);
    assert!(
        matches!(
            r,
            Err(Error::Unattributable {
                reason: Unattributable::NoGradient,
                ..
            })
        ),
        "{r:?}"
    );
}

#[test]
fn candle_errors_carry_their_source() {
    let map = VarMap::new();
    let net = MlpNet::with_vars(&[5, 3], &map);
    let data = samples(8, 6, 3, 0);
    // Inputs of 6 features into a layer of 5: candle's matmul fails.
    let r = CandleModel::builder(&net, SampleCollate::new(&[6]), Margin).build(&data);
    match r {
        Err(
            e @ Error::Framework {
                framework: "candle",
                ..
            },
        ) => {
            assert!(std::error::Error::source(&e).is_some());
        }
        other => panic!("expected a candle error, got {:?}", other.err()),
    }
}

/// conv → ReLU → candle's own `max_pool2d` → linear: candle 0.11's max-pool backward scales
/// the gradient by ¼, which the builder's gradient check catches at the conv layer.
struct CandlePool(Conv2d, Linear);
impl Network for CandlePool {
    fn forward(&self, x: &Tensor, rec: &mut Recorder) -> candle::Result<Tensor> {
        let x = x.reshape(((), 1, 4, 4))?;
        let h = rec
            .conv2d("conv", &self.0, &x)?
            .relu()?
            .max_pool2d(2)?
            .flatten_from(1)?;
        rec.linear("fc", &self.1, &h)
    }
}

#[test]
fn a_wrong_backward_fails_the_gradient_check() {
    let map = VarMap::new();
    let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
    let cfg = Conv2dConfig {
        padding: 1,
        ..Default::default()
    };
    let conv = candle_nn::conv2d(1, 3, 3, cfg, vb.pp("conv")).unwrap();
    let net = CandlePool(conv, lin(12, 3, &vb, "fc"));
    seed_vars(&map, 0).unwrap();
    let (layer, reason) = refusal(build(&net, 16));
    assert_eq!(layer, "conv");
    let Unattributable::GradientCheck {
        backward,
        finite_difference,
    } = reason
    else {
        panic!("expected a gradient-check refusal, got {reason:?}");
    };
    assert!(
        (backward / finite_difference - 0.25).abs() < 0.05,
        "{backward} vs {finite_difference}"
    );
    // The crate's own max-pool passes.
    struct OwnPool(Conv2d, Linear);
    impl Network for OwnPool {
        fn forward(&self, x: &Tensor, rec: &mut Recorder) -> candle::Result<Tensor> {
            let x = x.reshape(((), 1, 4, 4))?;
            let h = rec.conv2d("conv", &self.0, &x)?.relu()?;
            let h = trak_candle::ops::max_pool2d(&h, 2)?.flatten_from(1)?;
            rec.linear("fc", &self.1, &h)
        }
    }
    build(OwnPool(net.0.clone(), net.1.clone()), 16).unwrap();
}
