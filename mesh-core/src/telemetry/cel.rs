//! CEL expressions of the Telemetry API (access-log `filter.expression`,
//! metric `tagOverrides.*.value`), compiled once with the `cel` crate and
//! evaluated per request against [`Attributes`].
//!
//! Not an evaluator of our own: parsing and evaluation are the `cel` crate's.
//! This module keeps the source text (for `Debug`, `Serialize` and equality,
//! so a policy compares cheaply and prints readably), shares the compiled
//! program behind an `Arc`, and applies the proxy's rules to the result.
//! It deserializes from that text by compiling it again
//! ([`CelExpr::compile`]): a text that does not compile is a serde error,
//! so a policy received from elsewhere is refused whole rather than run
//! with an expression that silently fails. The rules applied to results:
//!
//! - **Access-log filter** ([`CelExpr::filter`]): Envoy's CEL access-log
//!   filter (`envoy.access_loggers.extension_filters.cel`,
//!   `source/extensions/access_loggers/filters/cel/cel.cc`) logs only when
//!   the expression evaluates to the boolean `true`; an evaluation error
//!   (a missing header, a type mismatch) or a non-bool result does not log.
//! - **Tag override** ([`CelExpr::tag_value`]): Istio's stats filter
//!   (istio/proxy `source/extensions/filters/http/istio_stats/istio_stats.cc`,
//!   `StreamOverrides::evaluate`) uses the tag value `unknown` when the
//!   expression fails, and otherwise Envoy's printed form of the value
//!   (strings as they are, numbers in decimal, bools as `true`/`false`).

use std::fmt;
use std::sync::{Arc, LazyLock};

use cel::{Context, Env, Program, Value};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::attributes::Attributes;

/// The tag value Istio's stats filter records when a tag expression fails.
pub const UNKNOWN_TAG_VALUE: &str = "unknown";

/// The standard CEL environment, built once: building it registers every
/// standard function, which is too much work to repeat per request.
static ENV: LazyLock<Arc<Env>> = LazyLock::new(|| Arc::new(Env::stdlib()));

/// A compiled CEL expression with its source text.
#[derive(Clone)]
pub struct CelExpr {
    source: Arc<str>,
    /// `None` when the source does not parse (only through
    /// [`CelExpr::compile_or_failing`]): every evaluation then fails.
    program: Option<Arc<Program>>,
}

/// Why an expression was rejected at validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid CEL expression {expression:?}: {reason}")]
pub struct CelError {
    /// The expression as written.
    pub expression: String,
    /// The parser's message.
    pub reason: String,
}

impl CelExpr {
    /// Parses `source`. Errors carry the parser's message; validation turns
    /// them into a field error.
    pub fn compile(source: &str) -> Result<Self, CelError> {
        let program = ENV.compile(source).map_err(|e| CelError {
            expression: source.to_string(),
            reason: e.to_string().trim().replace('\n', " "),
        })?;
        Ok(Self {
            source: Arc::from(source),
            program: Some(Arc::new(program)),
        })
    }

    /// Like [`CelExpr::compile`], but an expression that does not parse
    /// becomes one whose every evaluation fails (a filter that never logs, a
    /// tag that is `unknown`). For policy building, where validation has
    /// already refused such resources and a stray one must fail closed
    /// rather than stop the whole computation.
    pub fn compile_or_failing(source: &str) -> Self {
        Self::compile(source).unwrap_or_else(|_| Self {
            source: Arc::from(source),
            program: None,
        })
    }

    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates against `attrs`, returning the raw CEL result.
    pub fn evaluate(&self, attrs: &Attributes<'_>) -> Result<Value, cel::ExecutionError> {
        let Some(program) = &self.program else {
            return Err(cel::ExecutionError::function_error(
                "parse",
                format!("{:?} is not a valid CEL expression", &*self.source),
            ));
        };
        let resolver = attrs.resolver();
        let mut ctx = Context::with_env(Arc::clone(&ENV));
        ctx.set_variable_resolver(&resolver);
        program.execute(&ctx)
    }

    /// Access-log filter semantics: log only on a boolean `true`; an error
    /// or any other value means "do not log" (as Envoy's CEL filter).
    pub fn filter(&self, attrs: &Attributes<'_>) -> bool {
        matches!(self.evaluate(attrs), Ok(Value::Bool(true)))
    }

    /// Tag-override semantics: the printed value, or `unknown` when the
    /// expression fails (as Istio's stats filter).
    pub fn tag_value(&self, attrs: &Attributes<'_>) -> String {
        match self.evaluate(attrs) {
            Ok(v) => print(&v).unwrap_or_else(|| UNKNOWN_TAG_VALUE.to_string()),
            Err(_) => UNKNOWN_TAG_VALUE.to_string(),
        }
    }
}

/// A value printed as Envoy's `Expr::print` does for the scalar types a tag
/// can hold. Containers have no tag form here and count as a failure.
fn print(v: &Value) -> Option<String> {
    Some(match v {
        Value::String(s) => s.to_string(),
        Value::Int(i) => i.to_string(),
        Value::UInt(u) => u.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
        Value::Null => "NULL".to_string(),
        Value::Duration(d) => {
            let secs = d.num_milliseconds() as f64 / 1000.0;
            format!("{secs}s")
        }
        Value::Timestamp(t) => t.to_rfc3339(),
        _ => return None,
    })
}

impl fmt::Debug for CelExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CelExpr({:?})", &*self.source)
    }
}

impl PartialEq for CelExpr {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for CelExpr {}

impl Serialize for CelExpr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

impl<'de> Deserialize<'de> for CelExpr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let source = String::deserialize(d)?;
        Self::compile(&source).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
#[path = "cel_tests.rs"]
mod tests;
