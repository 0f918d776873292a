//! The command's errors: a usage mistake, or the library's typed error; each printed as one
//! line `error: …`.

use std::fmt;

/// Why a command failed.
#[derive(Debug)]
pub enum CliError {
    /// The command line is wrong (exit status 2).
    Usage(String),
    /// The work failed (exit status 1).
    Trak(trak_candle::trak::Error),
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Usage(m) => write!(f, "{m} (trak-lm --help for usage)"),
            Self::Trak(e) => write!(f, "{e}"),
        }
    }
}

impl From<trak_candle::trak::Error> for CliError {
    fn from(e: trak_candle::trak::Error) -> Self {
        Self::Trak(e)
    }
}

impl CliError {
    /// The process's exit status.
    pub fn status(&self) -> i32 {
        match self {
            Self::Usage(_) => 2,
            Self::Trak(_) => 1,
        }
    }
}
