//! Errors: library code returns `anyhow::Result`; an [`InputError`] anywhere in the chain marks the
//! failure as the user's input (exit code 2), anything else is a runtime failure (exit code 1).
use std::fmt;

/// A problem with what the user gave us (a file, a flag, a config): exit code 2.
#[derive(Debug)]
pub struct InputError(pub String);

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InputError {}

/// Build an input error (exit code 2) with a formatted message naming the file, the cause and the fix.
#[macro_export]
macro_rules! input_err {
    ($($arg:tt)*) => { anyhow::Error::new($crate::error::InputError(format!($($arg)*))) };
}

/// Return early with an input error.
#[macro_export]
macro_rules! input_bail {
    ($($arg:tt)*) => { return Err($crate::input_err!($($arg)*)) };
}

/// Exit code for an error: 2 when any cause is an [`InputError`], else 1.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    if err.chain().any(|c| c.is::<InputError>()) {
        2
    } else {
        1
    }
}

pub type Result<T> = anyhow::Result<T>;
