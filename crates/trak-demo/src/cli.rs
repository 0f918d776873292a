//! The command-line options the examples share, parsed into typed values; a malformed option
//! is an [`Error::InvalidParameter`] naming it, never a panic.

use trak::{Error, ProjectorKind, Result, Ridge};

use crate::family::Family;

/// The arguments of a process (after the program name).
#[derive(Debug, Clone)]
pub struct Args(Vec<String>);

fn bad(parameter: &'static str, value: &str, expected: &str) -> Error {
    Error::InvalidParameter {
        parameter,
        value: format!("{value:?}"),
        expected: expected.into(),
    }
}

impl Args {
    /// This process's arguments.
    pub fn from_env() -> Self {
        Self(std::env::args().skip(1).collect())
    }

    /// Arguments given explicitly (tests).
    pub fn new(args: &[&str]) -> Self {
        Self(args.iter().map(|a| a.to_string()).collect())
    }

    /// True if `--name` is present.
    pub fn flag(&self, name: &str) -> bool {
        self.0.iter().any(|a| a == name)
    }

    /// The value after the last `--name`, if any.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.0
            .windows(2)
            .rev()
            .find(|w| w[0] == name)
            .map(|w| w[1].as_str())
    }

    /// Every value given after `--name` (repeatable options).
    pub fn values(&self, name: &str) -> Vec<&str> {
        self.0
            .windows(2)
            .filter(|w| w[0] == name)
            .map(|w| w[1].as_str())
            .collect()
    }

    /// The integer after `--name`, or `default`.
    pub fn usize_or(&self, name: &'static str, default: usize) -> Result<usize> {
        match self.value(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| bad(name, v, "a non-negative integer")),
        }
    }

    /// The positional argument `i` (arguments not starting with `--` and not an option's
    /// value), parsed, or `default`.
    pub fn positional_or<T: std::str::FromStr>(
        &self,
        i: usize,
        name: &'static str,
        default: T,
    ) -> Result<T> {
        let mut pos = Vec::new();
        let mut skip = false;
        for a in &self.0 {
            if skip {
                skip = false;
            } else if a.starts_with("--") {
                skip = !matches!(
                    a.as_str(),
                    "--quick" | "--sweep" | "--no-cache" | "--keep" | "--update-docs"
                );
            } else {
                pos.push(a.as_str());
            }
        }
        match pos.get(i) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| bad(name, v, "a value of the right type")),
        }
    }

    /// The families named by `--family NAME` options (empty if none).
    pub fn families(&self) -> Result<Vec<Family>> {
        self.values("--family")
            .into_iter()
            .map(Family::from_name)
            .collect()
    }

    /// `--k 512,2048`: projection dimensions.
    pub fn proj_dims(&self) -> Result<Option<Vec<usize>>> {
        self.value("--k")
            .map(|list| {
                list.split(',')
                    .map(|v| {
                        v.parse()
                            .map_err(|_| bad("--k", v, "comma-separated integers"))
                    })
                    .collect()
            })
            .transpose()
    }

    /// `--ensembles 1,5,20`: ensemble sizes (checkpoint or run counts, each ≥ 1).
    pub fn ensembles(&self) -> Result<Option<Vec<usize>>> {
        self.value("--ensembles")
            .map(|list| {
                list.split(',')
                    .map(|v| {
                        v.parse()
                            .ok()
                            .filter(|&m: &usize| m >= 1)
                            .ok_or_else(|| bad("--ensembles", v, "comma-separated counts ≥ 1"))
                    })
                    .collect()
            })
            .transpose()
    }

    /// `--ridges n:2,k:0.1,abs:0`: ridge rules (n: × tr/n, k: × tr/k, abs: absolute λ).
    pub fn ridges(&self) -> Result<Option<Vec<Ridge>>> {
        self.value("--ridges")
            .map(|list| list.split(',').map(parse_ridge).collect())
            .transpose()
    }

    /// `--projectors sparse:4,sparse,factored,gaussian` (or `none`): extra projector rows.
    pub fn projectors(&self) -> Result<Option<Vec<ProjectorKind>>> {
        self.value("--projectors")
            .map(|list| {
                list.split(',')
                    .filter(|item| *item != "none")
                    .map(parse_projector)
                    .collect()
            })
            .transpose()
    }
}

/// `n:2`, `k:0.1` or `abs:0`.
pub fn parse_ridge(item: &str) -> Result<Ridge> {
    let expected = "n:<c>, k:<c> or abs:<λ>";
    let (kind, v) = item
        .split_once(':')
        .ok_or_else(|| bad("--ridges", item, expected))?;
    let v: f64 = v.parse().map_err(|_| bad("--ridges", item, expected))?;
    match kind {
        "n" => Ok(Ridge::MeanSquaredNorm(v)),
        "k" => Ok(Ridge::Relative(v)),
        "abs" => Ok(Ridge::Absolute(v)),
        _ => Err(bad("--ridges", item, expected)),
    }
}

/// `dense` (Rademacher), `gaussian`, `sparse[:s]`, `factored[:expansion]`, `factored-small` or
/// `identity`.
pub fn parse_projector(item: &str) -> Result<ProjectorKind> {
    let expected = "dense, gaussian, sparse[:s], factored[:expansion], factored-small or identity";
    match item.split_once(':') {
        Some(("sparse", s)) => {
            let s = s.parse().map_err(|_| bad("projector", item, expected))?;
            Ok(ProjectorKind::Sparse { s })
        }
        Some(("factored", e)) => {
            let expansion = e.parse().map_err(|_| bad("projector", item, expected))?;
            Ok(ProjectorKind::Factored { expansion })
        }
        None => match item {
            "dense" | "rademacher" => Ok(ProjectorKind::Rademacher),
            "gaussian" => Ok(ProjectorKind::Gaussian),
            "sparse" => Ok(ProjectorKind::SPARSE),
            "factored" => Ok(ProjectorKind::FACTORED),
            "factored-small" => Ok(ProjectorKind::FactoredSmall),
            "identity" => Ok(ProjectorKind::Identity),
            _ => Err(bad("projector", item, expected)),
        },
        _ => Err(bad("projector", item, expected)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse_or_name_what_is_wrong() {
        let a = Args::new(&[
            "--k",
            "512,2048",
            "--ridges",
            "n:2,abs:0",
            "--family",
            "mlp",
        ]);
        assert_eq!(a.proj_dims().unwrap(), Some(vec![512, 2048]));
        assert_eq!(
            a.ridges().unwrap(),
            Some(vec![Ridge::MeanSquaredNorm(2.0), Ridge::Absolute(0.0)])
        );
        assert_eq!(a.families().unwrap(), vec![Family::Mlp]);
        let bad = Args::new(&["--k", "5x", "--projectors", "sparse:q"]);
        assert!(matches!(
            bad.proj_dims(),
            Err(Error::InvalidParameter {
                parameter: "--k",
                ..
            })
        ));
        assert!(bad.projectors().is_err());
        let pos = Args::new(&["2048", "--threads", "2", "64", "--quick"]);
        assert_eq!(pos.positional_or(1, "b", 0usize).unwrap(), 64);
    }
}
