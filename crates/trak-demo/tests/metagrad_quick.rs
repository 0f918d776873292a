//! The metagradient protocol's quick path (the code `examples/metagrad_lds.rs --quick` runs):
//! on a small same-seed truth, metagradients beat TRAK at M = 1, which beats random scores,
//! for both families.

use trak_demo::metagrad::{self, MetagradConfig, Training};

#[test]
fn quick_metagradients_beat_trak_and_random_on_the_same_seed_truth() {
    let cfg = MetagradConfig::quick();
    let out = metagrad::run(&cfg, |_| Training::smooth()).unwrap();
    for r in &out.rows {
        eprintln!("{}", r.line());
    }
    for family in &cfg.families {
        let get = |method: &str| {
            out.rows
                .iter()
                .find(|r| r.family == *family && r.method == method && r.m == 1)
                .unwrap_or_else(|| panic!("no {method} row for {}", family.name()))
                .lds
        };
        let (mg, trak, random) = (get("metagrad"), get("trak"), get("random"));
        assert!(mg > trak, "{}: metagrad {mg} ≤ TRAK {trak}", family.name());
        assert!(
            trak > random,
            "{}: TRAK {trak} ≤ random {random}",
            family.name()
        );
        assert!(
            mg > 0.9,
            "{}: metagrad {mg} on a smooth same-seed truth",
            family.name()
        );
    }
}
