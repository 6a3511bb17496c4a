//! Envoy's matchers, one meaning for every caller: route matching, the RBAC
//! evaluator, xDS decode and encode, and CSDS node selection all match
//! strings, headers and query parameters through these types.
//!
//! - [`StringMatcher`]: Envoy's `StringMatcher` (exact, prefix, suffix,
//!   contains, whole-value RE2 regex, each optionally ASCII
//!   case-insensitive; regex ignores `ignore_case` as Envoy does).
//! - [`HeaderMatcher`]: Envoy's `HeaderMatcher`, with `invert_match` and
//!   `treat_missing_header_as_empty` and Envoy's rules for a missing header.
//! - [`uri`]: splitting `path?query`, reading a query parameter, and
//!   percent-decoding.
//!
//! What this module is not: Istio's own value syntax (`prefix*`, `*suffix`
//! in AuthorizationPolicy) lives in [`crate::authz::matcher`], and lowers to
//! these types when sent to a data plane.

mod header;
mod string;
pub mod uri;

pub use header::{join_values, HeaderMatcher, HeaderSource, NO_HEADERS};
pub use string::{FullRegex, StrMatcher, StringMatcher};
