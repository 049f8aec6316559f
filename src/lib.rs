//! recsys: Amazon product reviews → a two-stage recommender (see DESIGN.md).
//!
//! Each stage is a module with one entry function `run(ctx, cfg) -> Result<Summary>`;
//! the CLI (`main.rs`), the tests and the benches call the same functions.

pub mod alloc;
pub mod cli;
pub mod cols;
pub mod config;
pub mod context;
pub mod data;
pub mod encoder;
pub mod error;
pub mod etl;
pub mod eval;
pub mod index;
pub mod io;
pub mod layout;
pub mod llm;
pub mod lock;
pub mod metrics;
pub mod pipeline;
pub mod rank;
pub mod retrieve;
pub mod train;

pub use context::Ctx;
pub use error::InputError;
pub use layout::{Layout, Split};
