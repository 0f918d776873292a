//! The LDS benchmark's quick path (the code `examples/lds.rs --quick` runs) on logistic
//! regression: TRAK beats gradient similarity, which beats random scores, and every TRAK LDS
//! is finite and in [0, 1]; its pictures are drawn, with their text, from the default
//! weighting's scores.

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
    pictures(&cfg, &out);
}

/// The snapshot is the library default's row at the largest k ≤ 2048 and M, and both
/// pictures have text in their title band (the embedded font loads and draws).
fn pictures(cfg: &BenchConfig, out: &protocol::BenchOutput) {
    let snap = &out.snapshots[0];
    let default = protocol::weighting_method(trak::Weighting::default());
    assert_eq!(snap.method, default);
    let row = out
        .rows
        .iter()
        .find(|r| r.method == default && r.k == snap.k && r.m == snap.m)
        .expect("the snapshot's row");
    assert_eq!(row.value, Some(snap.lds));
    let dir = std::env::temp_dir().join(format!("trak-demo-pictures-{}", std::process::id()));
    let files = trak_demo::pictures::lds_pictures(&dir, cfg, out).unwrap();
    assert_eq!(files.len(), 2);
    for f in &files {
        let img = image::open(f).unwrap().to_rgb8();
        let dark = (0..img.width())
            .flat_map(|x| (0..24).map(move |y| (x, y)))
            .filter(|&(x, y)| img.get_pixel(x, y).0[0] < 128)
            .count();
        assert!(
            dark > 200,
            "{}: {dark} dark pixels in the title band",
            f.display()
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}
