//! The error type of the `ir` crate. Every error says whose fault it is: the user's model or
//! input, a feature atomc does not support, or a bug in atomc.

use std::path::PathBuf;

/// Errors of import, inference, verification and interpretation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The model is malformed or inconsistent.
    #[error("invalid model: {0}")]
    InvalidModel(String),
    /// Run-time inputs do not match what the model declares.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The model is valid but uses something atomc does not implement.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The text form could not be parsed.
    #[error("parse error at line {line}: {msg}")]
    Parse { line: usize, msg: String },
    /// A file could not be read. (The I/O error is part of the message, not a `source`,
    /// so error chains do not print it twice.)
    #[error("cannot read '{}': {cause}", path.display())]
    Io { path: PathBuf, cause: std::io::Error },
    /// An error with the place it happened (a node, a tensor, a file). The inner error is
    /// part of the message, not a `source`, so error chains do not print it twice.
    #[error("{context}: {inner}")]
    Context { context: String, inner: Box<Error> },
    /// A bug in atomc: an invariant did not hold.
    #[error("internal error (a bug in atomc, please report it): {0}")]
    Internal(String),
}

/// `Result` with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps the error with the place it happened.
    pub fn context(self, context: impl Into<String>) -> Error {
        Error::Context { context: context.into(), inner: Box::new(self) }
    }

    /// The innermost error, without context.
    pub fn root(&self) -> &Error {
        match self {
            Error::Context { inner, .. } => inner.root(),
            other => other,
        }
    }
}

/// Adds context to results.
pub trait ResultExt<T> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> ResultExt<T> for Result<T> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| e.context(context()))
    }
}

/// Returns early with an [`Error::InvalidModel`] built from a format string.
#[macro_export]
macro_rules! bail_model {
    ($($arg:tt)*) => { return Err($crate::Error::InvalidModel(format!($($arg)*))) };
}

/// Returns early with an [`Error::Unsupported`] built from a format string.
#[macro_export]
macro_rules! bail_unsupported {
    ($($arg:tt)*) => { return Err($crate::Error::Unsupported(format!($($arg)*))) };
}
