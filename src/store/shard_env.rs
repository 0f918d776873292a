//! A [`Shard`] from a SLURM job array's environment.

use super::Shard;
use crate::error::{Error, Result};

/// The variables SLURM sets in every task of a job array.
const ID: &str = "SLURM_ARRAY_TASK_ID";
const COUNT: &str = "SLURM_ARRAY_TASK_COUNT";
const MIN: &str = "SLURM_ARRAY_TASK_MIN";
const MAX: &str = "SLURM_ARRAY_TASK_MAX";
const STEP: &str = "SLURM_ARRAY_TASK_STEP";

impl Shard {
    /// This process's shard when it is a task of a SLURM job array (`sbatch --array=0-3`):
    /// task `SLURM_ARRAY_TASK_ID` of the array's `SLURM_ARRAY_TASK_COUNT` tasks, numbered
    /// from `SLURM_ARRAY_TASK_MIN` in steps of `SLURM_ARRAY_TASK_STEP` (default 1). Any
    /// contiguous array works (`--array=0-3`, `--array=1-4`, `--array=0-15:5`); an array with
    /// holes (`--array=1,3,7`) does not map onto shards and is refused. A missing, malformed or
    /// inconsistent variable is [`Error::Environment`] naming it.
    pub fn from_env() -> Result<Shard> {
        Shard::from_vars(|name| std::env::var(name).ok())
    }

    /// [`Shard::from_env`] reading the variables through `var` (for tests, or a launcher
    /// that passes them otherwise).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Shard> {
        let read = |name: &'static str| -> Result<Option<usize>> {
            match var(name) {
                None => Ok(None),
                Some(v) => v.trim().parse().map(Some).map_err(|_| Error::Environment {
                    variable: name,
                    value: Some(v.clone()),
                    reason: "not a non-negative integer".into(),
                }),
            }
        };
        let id = read(ID)?.ok_or(Error::Environment {
            variable: ID,
            value: None,
            reason: "not set: this process is not a task of a SLURM job array".into(),
        })?;
        let min = read(MIN)?.unwrap_or(0);
        let step = read(STEP)?.unwrap_or(1);
        let bad = |variable, reason: String| Error::Environment {
            variable,
            value: var(variable),
            reason,
        };
        if step == 0 {
            return Err(bad(STEP, "must be ≥ 1".into()));
        }
        let span = read(MAX)?
            .filter(|&max| max >= min)
            .map(|max| (max - min) / step + 1);
        let count = match (read(COUNT)?, span) {
            (Some(c), Some(s)) if c != s => {
                let reason = format!(
                    "{c} tasks, but {MIN}..={MAX} in steps of {step} spans {s}: the array has \
                     holes (submit a contiguous --array=0-{})",
                    c.saturating_sub(1)
                );
                return Err(bad(COUNT, reason));
            }
            (Some(c), _) => c,
            (None, Some(s)) => s,
            (None, None) => return Err(missing_count()),
        };
        if id < min || (id - min) % step != 0 {
            let reason = format!("task {id} is not min {min} + a multiple of step {step}");
            return Err(bad(ID, reason));
        }
        let index = (id - min) / step;
        if index >= count {
            let reason = format!(
                "task {id} would be shard {index} of {count}: the array has holes \
                 (submit a contiguous --array=0-{})",
                count.saturating_sub(1)
            );
            return Err(bad(ID, reason));
        }
        Shard::new(index, count)
    }
}

fn missing_count() -> Error {
    Error::Environment {
        variable: COUNT,
        value: None,
        reason: format!("not set, and {MAX} does not give the count either"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| pairs.iter().find(|p| p.0 == name).map(|p| p.1.to_string())
    }

    #[test]
    fn contiguous_arrays_map_onto_shards() {
        let s = Shard::from_vars(vars(&[(ID, "2"), (COUNT, "4"), (MIN, "0"), (MAX, "3")]));
        assert_eq!(s.unwrap(), Shard::new(2, 4).unwrap());
        let s = Shard::from_vars(vars(&[(ID, "4"), (MIN, "1"), (MAX, "4")]));
        assert_eq!(s.unwrap(), Shard::new(3, 4).unwrap());
        let s = Shard::from_vars(vars(&[(ID, "10"), (COUNT, "4"), (MIN, "0"), (STEP, "5")]));
        assert_eq!(s.unwrap(), Shard::new(2, 4).unwrap());
    }

    #[test]
    fn missing_malformed_or_inconsistent_variables_are_named() {
        let name = |r: Result<Shard>| match r {
            Err(Error::Environment { variable, .. }) => variable,
            other => panic!("expected Environment, got {other:?}"),
        };
        assert_eq!(name(Shard::from_vars(vars(&[]))), ID);
        assert_eq!(
            name(Shard::from_vars(vars(&[(ID, "x1"), (COUNT, "4")]))),
            ID
        );
        assert_eq!(name(Shard::from_vars(vars(&[(ID, "1")]))), COUNT);
        assert_eq!(
            name(Shard::from_vars(vars(&[(ID, "1"), (COUNT, "-2")]))),
            COUNT
        );
        // --array=1,3,7: COUNT 3, MIN 1, MAX 7, whichever task reads it.
        for id in ["1", "3", "7"] {
            let holes = [(ID, id), (COUNT, "3"), (MIN, "1"), (MAX, "7")];
            let e = Shard::from_vars(vars(&holes)).unwrap_err();
            assert!(e.to_string().contains("holes"), "{e}");
            assert_eq!(name(Err(e)), COUNT);
        }
        // Without MAX, a task past the count is caught by its own id.
        let past = [(ID, "7"), (COUNT, "3"), (MIN, "1")];
        assert_eq!(name(Shard::from_vars(vars(&past))), ID);
        let off_step = [(ID, "3"), (COUNT, "4"), (MIN, "0"), (STEP, "5")];
        assert_eq!(name(Shard::from_vars(vars(&off_step))), ID);
    }
}
