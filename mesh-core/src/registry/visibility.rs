//! `exportTo`: which namespaces may see a service, VirtualService or
//! DestinationRule.

use std::collections::BTreeSet;

use serde::Serialize;

/// The namespaces a resource is exported to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportTo {
    /// Every namespace (`*`, the default).
    All,
    /// These namespaces only (`.` already resolved to the resource's own).
    Namespaces(BTreeSet<String>),
}

impl ExportTo {
    /// Parses an `exportTo` list written in `own_namespace`. An empty list
    /// means the mesh default, `default` (pass `&[]` for "everywhere").
    /// `~` exports nowhere.
    pub fn parse(list: &[String], own_namespace: &str, default: &[String]) -> Self {
        let list = if list.is_empty() { default } else { list };
        if list.is_empty() || list.iter().any(|s| s == "*") {
            return ExportTo::All;
        }
        let set = list
            .iter()
            .filter(|s| s.as_str() != "~")
            .map(|s| {
                if s == "." {
                    own_namespace.to_string()
                } else {
                    s.clone()
                }
            })
            .collect();
        ExportTo::Namespaces(set)
    }

    /// Parses the `networking.istio.io/exportTo` annotation of a Kubernetes Service.
    pub fn from_annotation(
        value: Option<&String>,
        own_namespace: &str,
        default: &[String],
    ) -> Self {
        let list: Vec<String> = value
            .map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        Self::parse(&list, own_namespace, default)
    }

    /// True when a client in `namespace` may see it.
    pub fn visible_to(&self, namespace: &str) -> bool {
        match self {
            ExportTo::All => true,
            ExportTo::Namespaces(set) => set.contains(namespace),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn export_rules() {
        assert!(ExportTo::parse(&[], "a", &[]).visible_to("b"));
        let dot = ExportTo::parse(&v(&["."]), "a", &[]);
        assert!(dot.visible_to("a") && !dot.visible_to("b"));
        let none = ExportTo::parse(&v(&["~"]), "a", &[]);
        assert!(!none.visible_to("a"));
        let list = ExportTo::parse(&v(&[".", "b"]), "a", &[]);
        assert!(list.visible_to("a") && list.visible_to("b") && !list.visible_to("c"));
        let defaulted = ExportTo::parse(&[], "a", &v(&["."]));
        assert!(!defaulted.visible_to("b"));
        let ann = ExportTo::from_annotation(Some(&"., ops".to_string()), "a", &[]);
        assert!(ann.visible_to("ops") && ann.visible_to("a"));
    }
}
