//! The CNN example's quick path (`cnn --quick`, the code the example runs): on the factored
//! projector, TRAK beats gradient similarity, which beats random scores.

#[path = "../examples/support/cnn_lds.rs"]
mod cnn_lds;
#[path = "../examples/support/mnist_cnn.rs"]
mod mnist_cnn;

use trak::ProjectorKind;

#[test]
fn quick_cnn_lds_orders_trak_grad_dot_random() {
    let mut cfg = cnn_lds::CnnConfig::quick();
    cfg.projectors = vec![ProjectorKind::FACTORED];
    cfg.bench.cache_dir = None;
    cfg.bench.verbose = false;
    let out = cnn_lds::run(&cfg).unwrap();
    let get = |method: &str, m: usize| {
        out.rows
            .iter()
            .find(|r| r.method == method && r.m == m)
            .map(|r| r.value)
            .unwrap_or_else(|| panic!("no {method} M={m} row"))
    };
    for r in &out.rows {
        eprintln!("{}", r.line());
    }
    for &m in &cfg.bench.ensembles {
        let (trak, dot, rand) = (get("trak", m), get("grad-dot", m), get("random", m));
        assert!(trak > dot, "M={m}: TRAK {trak} ≤ grad-dot {dot}");
        assert!(dot > rand, "M={m}: grad-dot {dot} ≤ random {rand}");
    }
}
