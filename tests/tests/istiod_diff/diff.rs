//! What a differential run collects: one [`Difference`] per request whose
//! outcome under istiod differs from its outcome under meshd, and the list
//! of differences we keep on purpose ([`Deliberate`], each with its reason,
//! mirrored in `tests/interop/README.md`). [`verdict`] prints every
//! difference and fails on any that is not deliberate.

use std::fmt::Write as _;

/// One request (or resource) on which istiod and meshd disagree.
#[derive(Debug, Clone)]
pub struct Difference {
    /// Which comparison (`stock-client`, `sdk`, `authz`).
    pub area: &'static str,
    /// The case: probe name, `host:port`, or policy name.
    pub case: String,
    /// The request (or resource field) compared.
    pub request: String,
    /// What istiod's side did.
    pub istiod: String,
    /// What meshd's side did.
    pub meshd: String,
}

/// A difference kept on purpose: any difference whose area matches and
/// whose case and request contain these strings is explained by `reason`.
#[derive(Debug, Clone, Copy)]
pub struct Deliberate {
    /// Area it applies to.
    pub area: &'static str,
    /// Substring of the case.
    pub case: &'static str,
    /// Substring of the request.
    pub request: &'static str,
    /// Why we differ from istiod here.
    pub reason: &'static str,
}

impl Deliberate {
    fn covers(&self, d: &Difference) -> bool {
        self.area == d.area && d.case.contains(self.case) && d.request.contains(self.request)
    }
}

fn clip(s: &str) -> String {
    const MAX: usize = 400;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// Prints every comparison made and every difference, and returns an error
/// listing the differences no [`Deliberate`] entry explains.
pub fn verdict(
    area: &str,
    compared: usize,
    diffs: &[Difference],
    deliberate: &[Deliberate],
) -> Result<(), String> {
    let mut unexplained = String::new();
    let mut explained = 0usize;
    for d in diffs {
        let why = deliberate.iter().find(|x| x.covers(d));
        let line = format!(
            "[{}] {} | {}\n    istiod: {}\n    meshd:  {}\n",
            d.area,
            d.case,
            d.request,
            clip(&d.istiod),
            clip(&d.meshd)
        );
        match why {
            Some(w) => {
                explained += 1;
                eprintln!("DELIBERATE {line}    why: {}", w.reason);
            }
            None => {
                eprintln!("DIFFERENT {line}");
                let _ = write!(unexplained, "{line}");
            }
        }
    }
    let bad = diffs.len() - explained;
    eprintln!(
        "{area}: {compared} comparisons, {} differences ({explained} deliberate, {bad} not explained)",
        diffs.len()
    );
    if bad == 0 {
        Ok(())
    } else {
        Err(format!(
            "{bad} of {compared} {area} comparisons differ between istiod and meshd and are not \
             listed as deliberate (fix meshd, or add the difference with its reason to DELIBERATE \
             in tests/tests/istiod_diff.rs and to tests/interop/README.md):\n{unexplained}"
        ))
    }
}
