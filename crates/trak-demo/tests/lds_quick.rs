//! The LDS benchmark's quick path (the code `examples/lds.rs --quick` runs) on logistic
//! regression: TRAK beats gradient similarity, which beats random scores, and every TRAK LDS
//! is finite and in [0, 1].

use trak_demo::family::Family;
use trak_demo::protocol::{self, BenchConfig};

#[test]
fn quick_lds_on_logistic_regression() {
    let mut cfg = BenchConfig::quick();
    cfg.families = vec![Family::LogReg];
    cfg.cache_dir = None;
    cfg.verbose = false;
    let out = protocol::run(&cfg).unwrap();
    let get = |method: &str, m: usize| {
        out.rows
            .iter()
            .find(|r| r.method == method && r.m == m)
            .and_then(|r| r.value)
            .unwrap_or_else(|| panic!("no {method} M={m} row"))
    };
    for r in &out.rows {
        eprintln!("{}", r.line());
        if r.method == "trak" {
            let v = r.value.expect("TRAK computed");
            assert!(v.is_finite() && (0.0..=1.0).contains(&v), "{}", r.line());
        }
    }
    for &m in &cfg.ensembles {
        let (trak, dot, rand) = (get("trak", m), get("grad-dot", m), get("random", m));
        assert!(trak > dot, "M={m}: TRAK {trak} ≤ grad-dot {dot}");
        assert!(dot > rand, "M={m}: grad-dot {dot} ≤ random {rand}");
    }
}
