//! Errors are values: what Python raises, ftrt returns.

use std::fmt;

/// What an object operation can fail with, named after the Python exception it stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// An index outside the sequence.
    IndexError(String),
    /// A key that is not in the mapping.
    KeyError(String),
    /// An operation applied to the wrong type, or an unhashable key.
    TypeError(String),
    /// An integer result outside 64 bits.
    OverflowError(String),
    /// A missing attribute.
    AttributeError(String),
    /// A class that cannot be made (an empty name, say).
    ValueError(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (name, message) = match self {
            Error::IndexError(m) => ("IndexError", m),
            Error::KeyError(m) => ("KeyError", m),
            Error::TypeError(m) => ("TypeError", m),
            Error::OverflowError(m) => ("OverflowError", m),
            Error::AttributeError(m) => ("AttributeError", m),
            Error::ValueError(m) => ("ValueError", m),
        };
        write!(f, "{name}: {message}")
    }
}

impl std::error::Error for Error {}

/// The result of an object operation.
pub type Result<T> = std::result::Result<T, Error>;
