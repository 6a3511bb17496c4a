//! Analyzer checks (destination_rule).

use super::{Context, Finding};

/// Runs the checks.
pub(super) fn check(_ctx: &Context<'_>, _out: &mut Vec<Finding>) {}
