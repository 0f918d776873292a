//! Command-line arguments: positionals, `--name value` options (repeatable ones collected),
//! and `--flag`s; an unknown option, a missing value or a malformed one is a one-line error.

use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;

use crate::error::CliError;

/// Parsed arguments of one command.
#[derive(Debug, Default)]
pub struct Args {
    positional: Vec<String>,
    values: HashMap<String, Vec<String>>,
    flags: Vec<String>,
}

impl Args {
    /// Parses `args` against the options (`--name`, taking a value) and flags (`--name`,
    /// taking none) a command knows.
    pub fn parse(args: &[String], options: &[&str], flags: &[&str]) -> Result<Self, CliError> {
        let mut out = Args::default();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            if flags.contains(&a.as_str()) {
                out.flags.push(a.clone());
            } else if options.contains(&a.as_str()) {
                let v = it
                    .next()
                    .ok_or_else(|| CliError::Usage(format!("{a} needs a value")))?;
                out.values.entry(a.clone()).or_default().push(v.clone());
            } else if a.starts_with("--") {
                return Err(CliError::Usage(format!("unknown option {a}")));
            } else {
                out.positional.push(a.clone());
            }
        }
        Ok(out)
    }

    /// The `i`th positional argument, named `what` in the error when it is missing.
    pub fn positional(&self, i: usize, what: &str) -> Result<&str, CliError> {
        self.positional
            .get(i)
            .map(String::as_str)
            .ok_or_else(|| CliError::Usage(format!("missing {what}")))
    }

    /// Every positional argument.
    pub fn positionals(&self) -> &[String] {
        &self.positional
    }

    /// Whether `--name` was given.
    pub fn flag(&self, name: &str) -> bool {
        self.flags.iter().any(|f| f == name)
    }

    /// The last value of `--name`.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.values
            .get(name)
            .and_then(|v| v.last())
            .map(String::as_str)
    }

    /// Every value of `--name`, in order.
    pub fn values(&self, name: &str) -> Vec<&str> {
        self.values
            .get(name)
            .map(|v| v.iter().map(String::as_str).collect())
            .unwrap_or_default()
    }

    /// A required option.
    pub fn required(&self, name: &str) -> Result<&str, CliError> {
        self.value(name)
            .ok_or_else(|| CliError::Usage(format!("missing {name}")))
    }

    /// A required path option.
    pub fn path(&self, name: &str) -> Result<PathBuf, CliError> {
        self.required(name).map(PathBuf::from)
    }

    /// `--name` parsed, or `default`.
    pub fn parsed<T: FromStr>(&self, name: &str, default: T) -> Result<T, CliError> {
        match self.value(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| CliError::Usage(format!("{name} {v:?} is not a valid value"))),
        }
    }

    /// A byte count (`3G`, `512M`, `1000000`) after `--name`.
    pub fn bytes(&self, name: &str) -> Result<Option<usize>, CliError> {
        let Some(v) = self.value(name) else {
            return Ok(None);
        };
        let (num, scale) = match v.chars().last() {
            Some('K' | 'k') => (&v[..v.len() - 1], 1usize << 10),
            Some('M' | 'm') => (&v[..v.len() - 1], 1 << 20),
            Some('G' | 'g') => (&v[..v.len() - 1], 1 << 30),
            _ => (v, 1),
        };
        match num.parse::<f64>() {
            Ok(x) if x.is_finite() && x > 0.0 => Ok(Some((x * scale as f64) as usize)),
            _ => Err(CliError::Usage(format!(
                "{name} {v:?} is not a size (e.g. 3G, 512M or a byte count)"
            ))),
        }
    }
}
