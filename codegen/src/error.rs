//! The error type of the code generators. Every error names the kernel it is about.

/// Errors of compiling and running a kernel.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kernel uses something this backend does not implement (yet).
    #[error("kernel '{kernel}': {msg}")]
    Unsupported { kernel: String, msg: String },
    /// The kernel is malformed: mismatched dtypes, an axis or index out of range, ...
    #[error("kernel '{kernel}': invalid kernel: {msg}")]
    InvalidKernel { kernel: String, msg: String },
    /// The buffers passed to `run` do not match the kernel's.
    #[error("kernel '{kernel}': invalid input: {msg}")]
    InvalidInput { kernel: String, msg: String },
    /// The compiled code stopped with an error (a Gather index out of range, an integer
    /// division by zero, ...).
    #[error("kernel '{kernel}': run-time error: {msg}")]
    Runtime { kernel: String, msg: String },
    /// The backend failed to compile code it was given: a bug in atomc.
    #[error("kernel '{kernel}': internal error (a bug in atomc, please report it): {msg}")]
    Internal { kernel: String, msg: String },
}

impl From<Error> for ir::Error {
    fn from(e: Error) -> ir::Error {
        match e {
            Error::Unsupported { .. } => ir::Error::Unsupported(e.to_string()),
            Error::InvalidKernel { .. } | Error::Internal { .. } => {
                ir::Error::Internal(e.to_string())
            }
            Error::InvalidInput { .. } | Error::Runtime { .. } => {
                ir::Error::InvalidInput(e.to_string())
            }
        }
    }
}
