//! Argument helpers shared by the subcommands: loading config and mesh
//! config, parsing `k=v,...` labels and `-H 'name: value'` headers.

use std::path::{Path, PathBuf};

use mesh_core::config::common::Labels;
use mesh_core::config::load::{load_mesh_config, load_paths, LoadResult};
use mesh_core::config::MeshConfig;

/// An error that stops a command before it can answer (exit status 2).
pub type CliError = String;

/// Loads the MeshConfig file, or the defaults when none is given.
pub fn mesh_config(path: Option<&Path>) -> Result<MeshConfig, CliError> {
    match path {
        None => Ok(MeshConfig::default()),
        Some(p) => load_mesh_config(p).map_err(|e| e.to_string()),
    }
}

/// Loads resources; unreadable paths are fatal, config errors are returned.
pub fn load(paths: &[PathBuf]) -> Result<LoadResult, CliError> {
    if paths.is_empty() {
        return Err("no configuration given; pass files or directories".into());
    }
    load_paths(paths).map_err(|e| e.to_string())
}

/// Loads resources for a simulator: config errors are fatal there, because
/// an answer computed without part of the config would be misleading.
pub fn load_valid(paths: &[PathBuf]) -> Result<LoadResult, CliError> {
    let loaded = load(paths)?;
    if !loaded.is_ok() {
        let list: Vec<String> = loaded.errors.iter().map(|e| format!("  {e}")).collect();
        return Err(format!(
            "the configuration has errors; fix them first (meshctl analyze shows all):\n{}",
            list.join("\n")
        ));
    }
    Ok(loaded)
}

/// Parses `k=v,k2=v2` into labels.
pub fn parse_labels(s: &str) -> Result<Labels, CliError> {
    let mut labels = Labels::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("label {part:?} is not key=value"))?;
        labels.insert(k.trim().to_string(), v.trim().to_string());
    }
    Ok(labels)
}

/// Parses `name: value` headers; names are lower-cased as HTTP/2 does.
pub fn parse_headers(list: &[String]) -> Result<Vec<(String, String)>, CliError> {
    list.iter()
        .map(|h| {
            let (n, v) = h
                .split_once(':')
                .ok_or_else(|| format!("header {h:?} is not 'name: value'"))?;
            Ok((n.trim().to_ascii_lowercase(), v.trim().to_string()))
        })
        .collect()
}

/// Prints a value as pretty JSON.
pub fn print_json<T: serde::Serialize>(value: &T) -> Result<(), CliError> {
    let s = serde_json::to_string_pretty(value).map_err(|e| e.to_string())?;
    println!("{s}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_headers_parse() {
        let l = parse_labels("app=reviews, version=v1").unwrap();
        assert_eq!(l.get("version").map(String::as_str), Some("v1"));
        assert!(parse_labels("app").is_err());
        let h = parse_headers(&["End-User: jason".to_string()]).unwrap();
        assert_eq!(h, vec![("end-user".to_string(), "jason".to_string())]);
        assert!(parse_headers(&["nocolon".to_string()]).is_err());
    }
}
