//! The cluster recipe under a real SLURM (slurmctld + slurmd, started by
//! `scripts/slurm/local-cluster.sh` and stopped after): a 4-task featurisation array on 20,000
//! examples and the dependent merge-and-score job of `scripts/slurm/submit.sh`, whose scores
//! must be bit-identical to a single process's; then the same with array tasks killed
//! mid-shard and requeued, a double submit of the whole array, and a task that fails for good
//! (the merge names its shard; requeued, the run completes).
//!
//! A test without libtest's harness: this binary is also the researcher's program that the
//! jobs run (`slurm featurize WORK`, the subcommands of `trak_demo::cluster`). It needs root
//! (it installs and starts SLURM) and fails, saying why, when the cluster cannot start.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use trak::store::{Run, Shard};
use trak_demo::cli::Args;
use trak_demo::cluster::{self, BLOCK_ROWS, Size, TARGET_SET};

/// Array tasks (and shards) of every submission.
const TASKS: usize = 4;
/// The longest any job may take before the test gives up, naming it.
const PATIENCE: Duration = Duration::from_secs(300);

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(cmd) = args.first() {
        if ["prepare", "featurize", "merge", "score"].contains(&cmd.as_str()) {
            if let Err(e) = cluster::main(&Args::from_env()) {
                eprintln!("error: {e}");
                std::process::exit(1);
            }
            return;
        }
    }
    let t = Instant::now();
    let cluster = LocalCluster::start();
    let work = Work::new();
    let reference = single_process(&work);
    plain_array(&work, &reference);
    killed_and_requeued(&work, &reference);
    double_submit(&work, &reference);
    failed_for_good(&work, &reference);
    drop(cluster);
    std::fs::remove_dir_all(&work.base).ok();
    println!("test slurm ... ok ({:.0} s)", t.elapsed().as_secs_f64());
}

/// The repository's `scripts/slurm/`.
fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/slurm")
}

/// Runs a command; its stdout, or a panic with its output.
fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        panic!(
            "{cmd:?} failed ({}):\n{text}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    text
}

/// The single-node cluster, stopped when dropped (also when the test panics).
struct LocalCluster;

impl LocalCluster {
    fn start() -> Self {
        let script = scripts().join("local-cluster.sh");
        let out = Command::new("bash").arg(&script).arg("start").output();
        match out {
            Ok(o) if o.status.success() => print!("{}", String::from_utf8_lossy(&o.stdout)),
            Ok(o) => panic!(
                "the local SLURM cluster did not start ({}): {}{}",
                o.status,
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => panic!("cannot run {}: {e}", script.display()),
        }
        LocalCluster
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        let script = scripts().join("local-cluster.sh");
        let _ = Command::new("bash").arg(script).arg("stop").status();
    }
}

/// The test's work directories (one per scenario) and the program the jobs run.
struct Work {
    base: PathBuf,
    program: PathBuf,
}

impl Work {
    fn new() -> Self {
        let base = PathBuf::from(format!("/var/tmp/trak-slurm-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let program = std::env::current_exe().expect("own path");
        let work = Work { base, program };
        cluster::prepare(&work.dir("single"), Size::FULL).expect("prepare");
        work
    }

    /// Work directory `name`, holding a copy of the prepared problem and a created run.
    fn scenario(&self, name: &str) -> PathBuf {
        let dir = self.dir(name);
        std::fs::create_dir_all(&dir).expect("work directory");
        let from = cluster::problem_path(&self.dir("single"));
        std::fs::copy(from, cluster::problem_path(&dir)).expect("copy the problem");
        cluster::prepare(&dir, Size::FULL).expect("prepare");
        dir
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.base.join(name)
    }

    /// `scripts/slurm/submit.sh`: (array job id, score job id).
    fn submit(&self, dir: &Path) -> (String, String) {
        let out = run(Command::new("bash")
            .arg(scripts().join("submit.sh"))
            .arg(&self.program)
            .arg(dir)
            .arg(TASKS.to_string()));
        let id = |key: &str| {
            out.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .unwrap_or_else(|| panic!("submit.sh printed {out:?}"))
                .to_string()
        };
        (id("featurize="), id("score="))
    }
}

/// The bits of a work directory's scores.
fn score_bits(dir: &Path) -> Vec<u32> {
    let scores = Run::open(cluster::run_dir(dir))
        .and_then(|r| r.load_scores(TARGET_SET))
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    assert_eq!((scores.n_train(), scores.n_targets()), (20_000, 100));
    scores.values().iter().map(|v| v.to_bits()).collect()
}

/// Featurise, merge and score in one process on every CPU (this binary's subcommands):
/// the reference bits, and the time.
fn single_process(work: &Work) -> Vec<u32> {
    let dir = work.dir("single");
    let t = Instant::now();
    for step in ["featurize", "merge", "score"] {
        run(Command::new(&work.program).arg(step).arg(&dir));
    }
    println!(
        "SLURM single_process_s={:.1} train=20000 checkpoints=2 blocks={}",
        t.elapsed().as_secs_f64(),
        20_000usize.div_ceil(BLOCK_ROWS)
    );
    score_bits(&dir)
}

/// `scontrol -o show job ID`'s `KEY=value` for `key` (the first record's).
fn job_field(id: &str, key: &str) -> String {
    let out = run(Command::new("scontrol").args(["-o", "show", "job", id]));
    out.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key} for job {id}: {out}"))
        .to_string()
}

fn is_terminal(state: &str) -> bool {
    [
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
    ]
    .contains(&state)
}

/// Waits until job `id` reaches a state for which `done` holds; returns it.
fn wait_for(id: &str, what: &str, done: impl Fn(&str) -> bool) -> String {
    let t = Instant::now();
    loop {
        let state = job_field(id, "JobState");
        if done(&state) {
            return state;
        }
        if t.elapsed() > PATIENCE {
            let queue = run(Command::new("squeue").args(["-t", "all"]));
            panic!("job {id} is still {state} after {PATIENCE:?}, waiting for {what}:\n{queue}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The log of job `id`'s output file `name` in `dir`/logs, for messages.
fn log(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join("logs").join(name)).unwrap_or_default()
}

/// Every featurisation log of a work directory, concatenated.
fn featurize_logs(dir: &Path) -> String {
    let mut names: Vec<_> = std::fs::read_dir(dir.join("logs"))
        .expect("logs")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("featurize-"))
        .collect();
    names.sort();
    names.iter().map(|n| log(dir, n)).collect()
}

/// Waits for the score job `score` of `dir` to end, and checks that it completed.
fn wait_scored(dir: &Path, score: &str) {
    let state = wait_for(score, "the score job", is_terminal);
    let log = log(dir, &format!("score-{score}.out"));
    assert_eq!(state, "COMPLETED", "{log}");
}

/// Submits the recipe unchanged and checks the scores and every task.
fn plain_array(work: &Work, reference: &[u32]) {
    let dir = work.scenario("plain");
    let t = Instant::now();
    let (feat, score) = work.submit(&dir);
    wait_scored(&dir, &score);
    let secs = t.elapsed().as_secs_f64();
    for task in 0..TASKS {
        assert_eq!(
            job_field(&format!("{feat}_{task}"), "JobState"),
            "COMPLETED"
        );
    }
    let identical = score_bits(&dir) == reference;
    println!(
        "SLURM array tasks={TASKS} cpus_per_task=1 node_cpus=2 submit_to_scores_s={secs:.1} \
         identical={identical}"
    );
    assert!(
        identical,
        "the array's scores differ from the single process's"
    );
}

/// Blocks of both checkpoints of `task`'s shard on disk.
fn shard_blocks_done(dir: &Path, task: usize) -> usize {
    let Ok(run) = Run::open(cluster::run_dir(dir)) else {
        return 0;
    };
    let range = Shard::new(task, TASKS)
        .expect("shard")
        .blocks(run.num_blocks());
    (0..2u64)
        .map(|c| {
            run.blocks_done(c)
                .map_or(0, |d| d.iter().filter(|b| range.contains(b)).count())
        })
        .sum()
}

/// How a running task is killed.
#[derive(Clone, Copy, Debug)]
enum Kill {
    /// `scancel --signal=KILL JOB_TASK` (SLURM 22.05 cancels the task: SIGTERM to the
    /// program, which has no handler, then SIGKILL).
    Scancel,
    /// SIGKILL to the program's own process (step 0 of `scontrol listpids`).
    ProcessKill,
}

/// Waits until `task` of array `feat` has written at least 3 of its 20 blocks, kills it as
/// `how` (before it has finished: checked), and waits for it to end.
fn kill_mid_shard(dir: &Path, feat: &str, task: usize, how: Kill) -> String {
    let id = format!("{feat}_{task}");
    let t = Instant::now();
    while shard_blocks_done(dir, task) < 3 {
        assert!(t.elapsed() < PATIENCE, "task {id} wrote no blocks");
        std::thread::sleep(Duration::from_millis(20));
    }
    match how {
        Kill::Scancel => {
            run(Command::new("scancel").args(["--signal=KILL", &id]));
        }
        Kill::ProcessKill => {
            let job = job_field(&id, "JobId");
            let pids = run(Command::new("scontrol").args(["listpids", &job]));
            let pid = pids
                .lines()
                .find(|l| l.split_whitespace().nth(2) == Some("0"))
                .and_then(|l| l.split_whitespace().next())
                .unwrap_or_else(|| panic!("no step 0 in {pids}"));
            run(Command::new("kill").args(["-KILL", pid]));
        }
    }
    let state = wait_for(&id, "the killed task to end", is_terminal);
    let done = shard_blocks_done(dir, task);
    assert!(
        done < 20,
        "task {id} had finished ({done} blocks) when killed"
    );
    println!("SLURM killed task={task} how={how:?} state={state} blocks_done={done}/20");
    state
}

/// Two tasks killed mid-shard (one each way) and requeued while the array runs; the
/// dependent job waits for the requeued tasks, and the scores are the single process's.
fn killed_and_requeued(work: &Work, reference: &[u32]) {
    let dir = work.scenario("killed");
    let t = Instant::now();
    let (feat, score) = work.submit(&dir);
    let mut survived = 0;
    for (task, how) in [(1, Kill::Scancel), (2, Kill::ProcessKill)] {
        kill_mid_shard(&dir, &feat, task, how);
        run(Command::new("scontrol").args(["requeue", &format!("{feat}_{task}")]));
        survived += 1;
    }
    wait_scored(&dir, &score);
    let secs = t.elapsed().as_secs_f64();
    let logs = featurize_logs(&dir);
    for task in [1, 2] {
        let id = format!("{feat}_{task}");
        assert_eq!(job_field(&id, "JobState"), "COMPLETED");
        assert_eq!(job_field(&id, "Restarts"), "1", "task {task}");
        let line = format!("FEATURIZE shard={task}/{TASKS} checkpoints=2");
        let resumed = logs
            .lines()
            .find(|l| l.starts_with(&line))
            .unwrap_or_else(|| panic!("no {line} in\n{logs}"));
        assert!(
            resumed.contains("restart=1") && !resumed.contains("skipped=0 "),
            "{resumed}"
        );
    }
    let identical = score_bits(&dir) == reference;
    println!(
        "SLURM kills={survived} requeues={survived} submit_to_scores_s={secs:.1} \
         identical={identical}"
    );
    assert!(identical, "scores after kills and requeues differ");
}

/// The whole array submitted twice at once (each throttled to one task at a time, so that
/// task i of both runs together): every task of both succeeds, both computed blocks of the
/// same shard, and the scores are the single process's.
fn double_submit(work: &Work, reference: &[u32]) {
    let dir = work.scenario("double");
    std::fs::create_dir_all(dir.join("logs")).expect("logs");
    let t = Instant::now();
    let array = |tag: &str| {
        let out = run(Command::new("sbatch")
            .args([
                "--parsable",
                &format!("--array=0-{}%1", TASKS - 1),
                &format!("--output={}/logs/featurize-{tag}-%a.out", dir.display()),
            ])
            .arg(scripts().join("featurize.sbatch"))
            .arg(&work.program)
            .arg(&dir));
        out.trim().to_string()
    };
    let (a, b) = (array("a"), array("b"));
    for id in [&a, &b] {
        for task in 0..TASKS {
            let task = format!("{id}_{task}");
            assert_eq!(
                wait_for(&task, "a duplicate task", is_terminal),
                "COMPLETED"
            );
        }
    }
    run(Command::new(&work.program).arg("merge").arg(&dir));
    run(Command::new(&work.program).arg("score").arg(&dir));
    let both = (0..TASKS)
        .filter(|t| {
            ["a", "b"].iter().all(|tag| {
                let l = log(&dir, &format!("featurize-{tag}-{t}.out"));
                l.contains("FEATURIZE") && !l.contains(" computed=0 ")
            })
        })
        .count();
    let identical = score_bits(&dir) == reference;
    println!(
        "SLURM double_submit shards_written_twice_at_once={both}/{TASKS} seconds={:.1} \
         identical={identical}",
        t.elapsed().as_secs_f64()
    );
    assert!(
        both > 0,
        "no shard was written by both submissions:\n{}",
        featurize_logs(&dir)
    );
    assert!(identical, "scores after a double submit differ");
}

/// A task killed and not requeued: the dependent job runs, fails, and names that task's
/// shard; requeued, the task resumes, and a second score job completes the run.
fn failed_for_good(work: &Work, reference: &[u32]) {
    let dir = work.scenario("failed");
    let t = Instant::now();
    let (feat, score) = work.submit(&dir);
    kill_mid_shard(&dir, &feat, 3, Kill::Scancel);
    assert_eq!(wait_for(&score, "the score job", is_terminal), "FAILED");
    let report = log(&dir, &format!("score-{score}.out"));
    let named = report.contains("incomplete shards of 4: 3 (");
    println!("SLURM failed_task=3 merge_names_shard={named}");
    assert!(named, "the merge does not name shard 3:\n{report}");
    run(Command::new("scontrol").args(["requeue", &format!("{feat}_3")]));
    let task = format!("{feat}_3");
    assert_eq!(
        wait_for(&task, "the requeued task", is_terminal),
        "COMPLETED"
    );
    let again = run(Command::new("sbatch")
        .args([
            "--parsable",
            &format!("--output={}/logs/score-again.out", dir.display()),
        ])
        .arg(scripts().join("score.sbatch"))
        .arg(&work.program)
        .arg(&dir)
        .arg(TASKS.to_string()));
    let state = wait_for(again.trim(), "the second score job", is_terminal);
    assert_eq!(state, "COMPLETED", "{}", log(&dir, "score-again.out"));
    let identical = score_bits(&dir) == reference;
    println!(
        "SLURM failed_task=3 requeued_and_rescored seconds={:.1} identical={identical}",
        t.elapsed().as_secs_f64()
    );
    assert!(identical, "scores after the failed task's rerun differ");
}
