//! YAML (and JSON, which is YAML) parsing that remembers where every field
//! was written.
//!
//! Documents become `serde_json::Value`s, which the typed resources then
//! deserialize from, plus a [`LineIndex`] from field path to line so that a
//! deserialization or validation error about `spec.http[0].timeout` can name
//! the line a person has to edit. Scalars are resolved with the YAML 1.2
//! core schema (`yes` is a string, `true` a boolean), as Kubernetes' newer
//! decoders do.

use std::collections::HashMap;

use serde_json::{Map, Number, Value};
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// Field path to 1-based line, for one document.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LineIndex {
    lines: HashMap<String, usize>,
}

impl LineIndex {
    /// The line of `path`, or of its nearest ancestor that was written down
    /// (`spec.http[0].timeout` falls back to `spec.http[0]`, then `spec.http`, ...).
    pub fn line_of(&self, path: &str) -> Option<usize> {
        let mut p = path;
        loop {
            if let Some(line) = self.lines.get(p) {
                return Some(*line);
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }

    /// Records the line of a path (first writer wins).
    pub fn insert(&mut self, path: String, line: usize) {
        self.lines.entry(path).or_insert(line);
    }

    /// Number of paths recorded.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }
}

/// One parsed YAML document.
#[derive(Debug, Clone)]
pub struct Document {
    /// 1-based position of the document in its stream.
    pub index: usize,
    /// 1-based line where the document's content starts.
    pub line: usize,
    /// The content.
    pub value: Value,
    /// Where each field was written.
    pub lines: LineIndex,
}

/// A syntax error, with its position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line} column {column}: {message}")]
pub struct SyntaxError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What the parser did not expect.
    pub message: String,
    /// 1-based document in which it happened.
    pub document: usize,
}

/// Parses every document of a YAML stream. Documents before a syntax error
/// are returned; the error stops the rest of the stream, since a YAML parser
/// cannot reliably resynchronise after one.
pub fn parse_documents(text: &str) -> (Vec<Document>, Option<SyntaxError>) {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    let res = parser.load(&mut builder, true);
    let mut error = builder.error.take();
    if let Err(e) = res {
        let m = e.marker();
        error.get_or_insert(SyntaxError {
            line: m.line(),
            column: m.col() + 1,
            message: e.info().to_string(),
            document: builder.docs.len() + 1,
        });
    }
    (builder.docs, error)
}

enum Frame {
    Seq {
        items: Vec<Value>,
        path: String,
        anchor: usize,
    },
    Map {
        map: Map<String, Value>,
        path: String,
        key: Option<String>,
        anchor: usize,
    },
}

#[derive(Default)]
struct Builder {
    docs: Vec<Document>,
    stack: Vec<Frame>,
    lines: LineIndex,
    anchors: HashMap<usize, Value>,
    doc_line: usize,
    error: Option<SyntaxError>,
}

fn join_key(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

impl Builder {
    fn fail(&mut self, mark: Marker, message: String) {
        if self.error.is_none() {
            self.error = Some(SyntaxError {
                line: mark.line(),
                column: mark.col() + 1,
                message,
                document: self.docs.len() + 1,
            });
        }
    }

    /// The path of the node that is about to start, recording its line.
    fn child_path(&mut self, mark: Marker) -> String {
        let path = match self.stack.last() {
            None => String::new(),
            Some(Frame::Seq { items, path, .. }) => format!("{path}[{}]", items.len()),
            Some(Frame::Map { path, key, .. }) => join_key(path, key.as_deref().unwrap_or("?")),
        };
        if matches!(self.stack.last(), Some(Frame::Seq { .. })) {
            self.lines.insert(path.clone(), mark.line());
        }
        path
    }

    /// Attaches a finished value to its parent, or completes the document.
    fn attach(&mut self, value: Value, anchor: usize, mark: Marker) {
        if anchor != 0 {
            self.anchors.insert(anchor, value.clone());
        }
        match self.stack.last_mut() {
            None => {
                let index = self.docs.len() + 1;
                self.docs.push(Document {
                    index,
                    line: self.doc_line.max(1),
                    value,
                    lines: std::mem::take(&mut self.lines),
                });
            }
            Some(Frame::Seq { items, .. }) => items.push(value),
            Some(Frame::Map { map, key, .. }) => match key.take() {
                Some(k) => {
                    map.insert(k, value);
                }
                None => {
                    // A value in key position: only scalars may be keys here.
                    let message = "complex mapping keys are not supported; use a plain string key"
                        .to_string();
                    self.fail(mark, message);
                }
            },
        }
    }

    fn scalar(
        &mut self,
        text: String,
        style: TScalarStyle,
        anchor: usize,
        tag: Option<Tag>,
        mark: Marker,
    ) {
        if let Some(Frame::Map { map, path, key, .. }) = self.stack.last_mut() {
            if key.is_none() {
                let duplicate = map.contains_key(&text).then(|| {
                    format!(
                        "duplicate key {text:?} in {}; each field may appear once",
                        if path.is_empty() {
                            "the document"
                        } else {
                            path.as_str()
                        }
                    )
                });
                let p = join_key(path, &text);
                *key = Some(text);
                self.lines.insert(p, mark.line());
                if let Some(message) = duplicate {
                    self.fail(mark, message);
                }
                return;
            }
        }
        if self.stack.is_empty() {
            self.doc_line = mark.line();
        } else {
            self.child_path(mark);
        }
        let value = resolve_scalar(text, style, tag.as_ref());
        self.attach(value, anchor, mark);
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        match ev {
            Event::DocumentStart => {
                self.lines = LineIndex::default();
                self.doc_line = mark.line();
            }
            Event::DocumentEnd => {
                // An empty document (`---` followed by nothing) yields no event
                // for content; it is skipped like kubectl does.
            }
            Event::MappingStart(anchor, _) | Event::SequenceStart(anchor, _) => {
                if self.stack.is_empty() {
                    self.doc_line = mark.line();
                }
                let path = self.child_path(mark);
                let frame = if matches!(ev, Event::MappingStart(..)) {
                    Frame::Map {
                        map: Map::new(),
                        path,
                        key: None,
                        anchor,
                    }
                } else {
                    Frame::Seq {
                        items: Vec::new(),
                        path,
                        anchor,
                    }
                };
                self.stack.push(frame);
            }
            Event::MappingEnd | Event::SequenceEnd => {
                let (value, anchor) = match self.stack.pop() {
                    Some(Frame::Map { map, anchor, .. }) => (Value::Object(map), anchor),
                    Some(Frame::Seq { items, anchor, .. }) => (Value::Array(items), anchor),
                    None => return,
                };
                self.attach(value, anchor, mark);
            }
            Event::Scalar(text, style, anchor, tag) => self.scalar(text, style, anchor, tag, mark),
            Event::Alias(id) => {
                let value = self.anchors.get(&id).cloned();
                match value {
                    Some(v) => {
                        if let Some(Frame::Map { key: None, .. }) = self.stack.last() {
                            self.fail(mark, "an alias cannot be used as a mapping key".into());
                            return;
                        }
                        self.child_path(mark);
                        self.attach(v, 0, mark);
                    }
                    None => self.fail(mark, "alias refers to an unknown anchor".into()),
                }
            }
            Event::StreamStart | Event::StreamEnd | Event::Nothing => {}
        }
    }
}

/// Resolves a scalar with the YAML 1.2 core schema.
fn resolve_scalar(text: String, style: TScalarStyle, tag: Option<&Tag>) -> Value {
    if let Some(tag) = tag {
        if tag.handle == "!!" || tag.handle == "tag:yaml.org,2002:" {
            match tag.suffix.as_str() {
                "str" => return Value::String(text),
                "null" => return Value::Null,
                _ => {}
            }
        }
    }
    if style != TScalarStyle::Plain {
        return Value::String(text);
    }
    match text.as_str() {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    if let Some(n) = parse_int(&text) {
        return Value::Number(n);
    }
    if looks_like_float(&text) {
        if let Ok(f) = text.parse::<f64>() {
            if let Some(n) = Number::from_f64(f) {
                return Value::Number(n);
            }
        }
    }
    Value::String(text)
}

fn parse_int(s: &str) -> Option<Number> {
    let (neg, digits) = match s.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let (radix, body) = if let Some(h) = digits.strip_prefix("0x") {
        (16, h)
    } else if let Some(o) = digits.strip_prefix("0o") {
        (8, o)
    } else {
        (10, digits)
    };
    if body.is_empty() || !body.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let v = u64::from_str_radix(body, radix).ok()?;
    if neg {
        let v = i64::try_from(v).ok()?;
        Some(Number::from(-v))
    } else {
        Some(Number::from(v))
    }
}

fn looks_like_float(s: &str) -> bool {
    let body = s.trim_start_matches(['-', '+']);
    !body.is_empty()
        && body
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit() || c == '.')
        && body
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '-' | '+'))
        && body.chars().any(|c| c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tracks_lines_of_nested_fields() {
        let text = "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
  - reviews
  http:
  - route:
    - destination:
        host: reviews
      weight: 90
";
        let (docs, err) = parse_documents(text);
        assert!(err.is_none());
        assert_eq!(docs.len(), 1);
        let d = &docs[0];
        assert_eq!(d.value["spec"]["http"][0]["route"][0]["weight"], json!(90));
        assert_eq!(d.lines.line_of("spec.hosts[0]"), Some(7));
        assert_eq!(d.lines.line_of("spec.http[0].route[0].weight"), Some(12));
        assert_eq!(
            d.lines.line_of("spec.http[0].route[0].destination.host"),
            Some(11)
        );
        // Unknown children fall back to the nearest ancestor.
        assert_eq!(
            d.lines.line_of("spec.http[0].route[0].destination.nope"),
            Some(10)
        );
        assert_eq!(d.line, 1);
    }

    #[test]
    fn multi_document_streams_keep_document_lines() {
        let text = "a: 1\n---\nb: 2\n---\n---\nc: [1, 2]\n";
        let (docs, err) = parse_documents(text);
        assert!(err.is_none());
        let values: Vec<_> = docs.iter().map(|d| d.value.clone()).collect();
        assert!(values.contains(&json!({"a": 1})));
        assert!(values.contains(&json!({"c": [1, 2]})));
        let c = docs.iter().find(|d| d.value.get("c").is_some());
        assert_eq!(c.map(|d| d.line), Some(6));
        assert_eq!(c.and_then(|d| d.lines.line_of("c[1]")), Some(6));
    }

    #[test]
    fn scalars_follow_the_core_schema() {
        let (docs, _) = parse_documents(
            "a: yes\nb: true\nc: '1'\nd: 1.5\ne: ~\nf: 0x10\ng: -3\nh: 1e3\ni: 10s\nj: !!str 5\nk: .5\n",
        );
        assert_eq!(
            docs[0].value,
            json!({"a": "yes", "b": true, "c": "1", "d": 1.5, "e": null, "f": 16, "g": -3, "h": 1000.0, "i": "10s", "j": "5", "k": 0.5})
        );
    }

    #[test]
    fn json_is_accepted() {
        let (docs, err) =
            parse_documents("{\"kind\": \"Service\", \"spec\": {\"ports\": [{\"port\": 80}]}}");
        assert!(err.is_none());
        assert_eq!(docs[0].value["spec"]["ports"][0]["port"], json!(80));
    }

    #[test]
    fn syntax_errors_have_positions() {
        let (docs, err) = parse_documents("a: 1\n---\nb: [1, 2\nc: 3\n");
        assert_eq!(docs.len(), 1);
        let err = err.expect("syntax error");
        assert_eq!(err.document, 2);
        assert!(err.line >= 3, "{err}");
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let (_, err) = parse_documents("spec:\n  hosts: [a]\n  hosts: [b]\n");
        let err = err.expect("duplicate");
        assert_eq!(err.line, 3);
        assert!(
            err.message.contains("duplicate key \"hosts\""),
            "{}",
            err.message
        );
    }

    #[test]
    fn anchors_and_aliases_expand() {
        let (docs, err) = parse_documents("a: &x {k: v}\nb: *x\n");
        assert!(err.is_none());
        assert_eq!(docs[0].value["b"], json!({"k": "v"}));
    }
}
