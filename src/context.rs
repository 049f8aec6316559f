//! What every stage gets from the global flags.

use crate::layout::Layout;

/// Global settings shared by all stages (`--data-dir`, `--category`, `--seed`, `--quiet`).
#[derive(Debug, Clone)]
pub struct Ctx {
    pub layout: Layout,
    pub seed: u64,
    pub quiet: bool,
    /// The data root's writer lock, when this process holds it (the pipeline names each stage
    /// in it as the stage starts).
    pub lock: Option<std::sync::Arc<crate::lock::RootLock>>,
}

impl Ctx {
    pub fn new(
        data_dir: impl Into<std::path::PathBuf>,
        category: &str,
        seed: u64,
        quiet: bool,
    ) -> Self {
        Ctx {
            layout: Layout::new(data_dir, category),
            seed,
            quiet,
            lock: None,
        }
    }
}
