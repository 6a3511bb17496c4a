//! YAML parsing with positions (stub).
use std::collections::HashMap;
/// Field path to line.
#[derive(Debug, Default, Clone)]
pub struct LineIndex {
    lines: HashMap<String, usize>,
}
impl LineIndex {
    /// Line of path or nearest ancestor.
    pub fn line_of(&self, path: &str) -> Option<usize> {
        self.lines.get(path).copied()
    }
}
