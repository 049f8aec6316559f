//! Typed errors for bad input: each names the file, the line and the field.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{}:{line}: field `{field}`: expected {expected}, found {found}", file.display())]
    Field {
        file: PathBuf,
        line: usize,
        field: String,
        expected: String,
        found: String,
    },
    #[error("{}:{line}: malformed JSON: {message}", file.display())]
    Json {
        file: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{}: {message}", file.display())]
    File { file: PathBuf, message: String },
}

impl InputError {
    /// The 1-based line the error is about (0 for file-level errors).
    pub fn line(&self) -> usize {
        match self {
            InputError::Field { line, .. } | InputError::Json { line, .. } => *line,
            InputError::File { .. } => 0,
        }
    }
}
