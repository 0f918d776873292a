//! `llama_speed --quick`: every line is printed, with positive finite rates and ratios, the
//! flops per token grow from featurisation (4 per weight) to candle's training pass (6), and
//! the native pass's features equal the candle route's.

#[path = "../examples/support/llama_speed.rs"]
mod llama_speed;

#[test]
fn quick_llama_speed_prints_every_line() {
    let out = llama_speed::run(&llama_speed::Config::quick()).unwrap();
    let lines = out.lines();
    for l in &lines {
        eprintln!("{l}");
    }
    let whats: Vec<&str> = out.speeds.iter().map(|s| s.what).collect();
    assert_eq!(
        whats,
        [
            "featurize",
            "featurize_candle",
            "forward_backward",
            "finetune",
            "finetune_candle"
        ]
    );
    let agreement = out.agreement.expect("--quick compares the routes");
    assert!(agreement < 1e-4, "features differ by {agreement}");
    for s in &out.speeds {
        for v in [
            s.tokens_per_s(),
            s.gemm_gflops,
            s.flops_per_token,
            s.ratio(),
        ] {
            assert!(v.is_finite() && v > 0.0, "{}", s.line());
        }
        assert!(
            s.line()
                .starts_with(&format!("SPEED what={} tokens_per_s=", s.what))
        );
    }
    let f = |i: usize| out.speeds[i].flops_per_token;
    assert!(f(0) < f(3) && f(3) < f(2), "{lines:?}");
    assert_eq!(out.lengths.len(), 12);
    assert!(out.lengths.iter().all(|&n| (4..=60).contains(&n)));
    assert!(lines.last().unwrap().starts_with("MEMORY peak_rss_mb="));
}
