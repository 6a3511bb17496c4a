//! Loading (stub).
use super::resource::Resource;
/// A load error.
#[derive(Debug, Clone)]
pub struct ConfigError {}
/// Loaded resources and errors.
#[derive(Debug, Default)]
pub struct LoadResult {
    /// Resources.
    pub resources: Vec<Resource>,
    /// Errors.
    pub errors: Vec<ConfigError>,
}
/// Loads paths.
pub fn load_paths(_p: &[std::path::PathBuf]) -> std::io::Result<LoadResult> {
    Ok(LoadResult::default())
}
/// Loads text.
pub fn load_str(_t: &str, _f: &str) -> LoadResult {
    LoadResult::default()
}
