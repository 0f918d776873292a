//! The command end to end on a tiny random Llama: finetune → index, SIGKILLed part-way → the
//! same index command again → query (text, JSON, tokens, HTML) → verify; the resumed run's
//! scores equal those of a run that was never killed, bit for bit.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{ok, s, trak_lm, workspace};
use trak_candle::trak::store::Run;

fn index_args<'a>(run: &'a str, train: &'a str, ckpts: &'a [String]) -> Vec<&'a str> {
    let mut a = vec![
        "index",
        run,
        "--data",
        train,
        "--k",
        "48",
        "--block-rows",
        "4",
        "--chunk",
        "4",
        "--quiet",
    ];
    for c in ckpts {
        a.extend(["--checkpoint", c.as_str()]);
    }
    a
}

/// Every stored score of a run, by target set.
fn all_scores(run: &Path) -> Vec<(String, Vec<f32>)> {
    let run = Run::open(run).unwrap();
    let mut out = Vec::new();
    for name in run.target_sets().unwrap() {
        let s = run.load_scores(&name).unwrap();
        out.push((name, s.values().iter().copied().collect()));
    }
    out
}

/// Starts `index`, kills it with SIGKILL once its first block is on disk; true if it was
/// killed before finishing.
fn kill_part_way(args: &[&str], run: &Path) -> bool {
    let mut child = trak_lm().args(args).spawn().unwrap();
    let t0 = Instant::now();
    loop {
        let started = std::fs::read_dir(run.join("ckpt-0"))
            .map(|d| {
                d.flatten()
                    .any(|e| e.file_name().to_string_lossy().ends_with(".feat"))
            })
            .unwrap_or(false);
        if started {
            break;
        }
        if child.try_wait().unwrap().is_some() || t0.elapsed() > Duration::from_secs(120) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    !status.success()
}

#[test]
fn finetune_index_kill_resume_query_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let (base, train, queries) = workspace(tmp.path(), 90);
    let ft = tmp.path().join("ft");
    ok(&[
        "finetune",
        "--model",
        s(&base),
        "--data",
        s(&train),
        "--out",
        s(&ft),
        "--epochs",
        "3",
        "--lr",
        "3e-3",
        "--batch",
        "8",
        "--freeze",
        "none",
        "--quiet",
    ]);
    for e in 1..=3 {
        for f in ["config.json", "model.safetensors", "tokenizer.json"] {
            assert!(
                ft.join(format!("epoch-{e}")).join(f).is_file(),
                "epoch-{e}/{f}"
            );
        }
    }
    assert!(ft.join("finetune.json").is_file());
    let ckpts: Vec<String> = (1..=3)
        .map(|e| s(&ft.join(format!("epoch-{e}"))).to_string())
        .collect();

    let (run_a, run_b) = (tmp.path().join("a"), tmp.path().join("b"));
    let train_s = s(&train);
    ok(&index_args(s(&run_a), train_s, &ckpts));
    let args_b = index_args(s(&run_b), train_s, &ckpts);
    assert!(
        kill_part_way(&args_b, &run_b),
        "the index finished before it could be killed"
    );
    assert!(!run_b.join("ckpt-2").join("merged.trak").exists());
    ok(&args_b);

    // Two shards, each its own process, in either order: the same scores again.
    let run_c = tmp.path().join("c");
    for shard in ["2/2", "1/2"] {
        let mut a = index_args(s(&run_c), train_s, &ckpts);
        a.extend(["--shard", shard]);
        let out = ok(&a);
        assert_eq!(out.contains("indexed "), shard == "1/2", "{shard}: {out}");
    }

    let q = s(&queries);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    let json_a = ok(&[
        "query",
        s(&run_a),
        "--queries",
        q,
        "--top",
        "3",
        "--json",
        "--quiet",
    ]);
    let json_b = ok(&[
        "query",
        s(&run_b),
        "--queries",
        q,
        "--top",
        "3",
        "--json",
        "--quiet",
    ]);
    assert_eq!(json_a, json_b);
    let json_c = ok(&[
        "query",
        s(&run_c),
        "--queries",
        q,
        "--top",
        "3",
        "--json",
        "--quiet",
    ]);
    assert_eq!(json_a, json_c, "sharded");
    let (sa, sb) = (all_scores(&run_a), all_scores(&run_b));
    assert_eq!(
        bits(&sa[0].1),
        bits(&all_scores(&run_c)[0].1),
        "sharded scores differ"
    );
    assert_eq!(sa.len(), 1);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(
        bits(&sa[0].1),
        bits(&sb[0].1),
        "resumed scores differ from the uninterrupted run's"
    );
    check_json(&json_a, 3, 3);

    let text = ok(&[
        "query",
        s(&run_a),
        "--queries",
        q,
        "--top",
        "2",
        "--tokens",
        "--quiet",
    ]);
    assert_eq!(text.matches("query ").count(), 3, "{text}");
    assert_eq!(text.matches("tokens: ").count(), 6, "{text}");
    // A bare file name, as in the README: written in the working directory.
    let out = trak_lm()
        .current_dir(tmp.path())
        .args(["query", s(&run_a), "--queries", q, "--top", "2"])
        .args(["--html", "top.html", "--quiet"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "query --html top.html: {err}");
    let html = tmp.path().join("top.html");
    check_html(&std::fs::read_to_string(&html).unwrap(), 3, 2);

    let verify = ok(&[
        "verify",
        s(&run_a),
        "--queries",
        q,
        "--remove-top",
        "2",
        "--quiet",
    ]);
    let lines: Vec<&str> = verify
        .lines()
        .filter(|l| l.starts_with("REMOVAL"))
        .collect();
    assert_eq!(lines.len(), 2, "{verify}");
    for (line, kind) in lines.iter().zip(["top", "random"]) {
        assert!(
            line.starts_with(&format!("REMOVAL kind={kind} docs=")),
            "{line}"
        );
        let delta: f64 = line
            .rsplit("mean_delta_logp=")
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(delta.is_finite(), "{line}");
    }
}

/// One JSON object per query, in order, each with `top` documents of decreasing score.
fn check_json(out: &str, queries: usize, top: usize) {
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), queries);
    for (i, v) in lines.iter().enumerate() {
        assert_eq!(v["query"], i);
        let t = v["top"].as_array().unwrap();
        assert_eq!(t.len(), top);
        let scores: Vec<f64> = t.iter().map(|d| d["score"].as_f64().unwrap()).collect();
        assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
        assert!(t.iter().all(|d| d["doc"].as_u64().is_some()));
    }
}

/// The page: self-contained, one section per query, `top` hits each, tokens shaded.
fn check_html(page: &str, queries: usize, top: usize) {
    assert!(page.starts_with("<!DOCTYPE html>"));
    assert!(page.trim_end().ends_with("</html>"));
    assert!(!page.contains("<script") && !page.contains("src=") && !page.contains("href="));
    assert_eq!(page.matches("<section id=\"query-").count(), queries);
    assert_eq!(page.matches("<li class=\"hit\"").count(), queries * top);
    assert!(
        page.matches("<span class=\"t\" style=\"background:rgba(")
            .count()
            >= queries * top
    );
}
