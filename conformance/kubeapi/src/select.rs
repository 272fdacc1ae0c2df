//! Label selectors (`a=b`, `a==b`, `a!=b`, `a`, `!a`, `a in (x,y)`,
//! `a notin (x)`, `a>1`, `a<1`, comma-AND) and field selectors
//! (`f=v`, `f==v`, `f!=v`, comma-AND, `\` escapes).

use crate::util::{is_label_value, is_qualified_name};
use crate::Resource;
use serde_json::Value;
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
enum Op {
    Exists,
    NotExists,
    Eq(String),
    NotEq(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Gt(i64),
    Lt(i64),
}

/// A parsed label selector: all requirements must hold.
#[derive(Debug, Clone, Default)]
pub(crate) struct LabelSelector(Vec<(String, Op)>);

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Not,
    Eq,
    NotEq,
    Gt,
    Lt,
    Open,
    Close,
    Comma,
}

fn tokenize(s: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                out.push(Tok::Open);
                i += 1
            }
            ')' => {
                out.push(Tok::Close);
                i += 1
            }
            ',' => {
                out.push(Tok::Comma);
                i += 1
            }
            '>' => {
                out.push(Tok::Gt);
                i += 1
            }
            '<' => {
                out.push(Tok::Lt);
                i += 1
            }
            '!' if chars.get(i + 1) == Some(&'=') => {
                out.push(Tok::NotEq);
                i += 2
            }
            '!' => {
                out.push(Tok::Not);
                i += 1
            }
            '=' => {
                out.push(Tok::Eq);
                i += if chars.get(i + 1) == Some(&'=') { 2 } else { 1 };
            }
            _ => {
                let start = i;
                while i < chars.len() && !" \t\n\r(),!=<>".contains(chars[i]) {
                    i += 1;
                }
                out.push(Tok::Ident(chars[start..i].iter().collect()));
            }
        }
    }
    Ok(out)
}

impl LabelSelector {
    /// Parse the `labelSelector` query parameter.
    pub(crate) fn parse(s: &str) -> Result<Self, String> {
        let toks = tokenize(s)?;
        let mut reqs = Vec::new();
        let mut i = 0;
        let err = |m: &str| Err(format!("unable to parse requirement: {m} in {s:?}"));
        if toks.is_empty() {
            return Ok(LabelSelector(reqs));
        }
        loop {
            let negated = toks.get(i) == Some(&Tok::Not);
            if negated {
                i += 1;
            }
            let key = match toks.get(i) {
                Some(Tok::Ident(k)) => k.clone(),
                _ => return err("expected a key"),
            };
            if !is_qualified_name(&key) {
                return err(&format!("invalid label key {key:?}"));
            }
            i += 1;
            let op = if negated {
                Op::NotExists
            } else {
                match toks.get(i) {
                    None | Some(Tok::Comma) => Op::Exists,
                    Some(Tok::Eq) | Some(Tok::NotEq) => {
                        let eq = toks[i] == Tok::Eq;
                        i += 1;
                        let v = match toks.get(i) {
                            Some(Tok::Ident(v)) => {
                                i += 1;
                                v.clone()
                            }
                            None | Some(Tok::Comma) => String::new(),
                            _ => return err("expected a value"),
                        };
                        if !is_label_value(&v) {
                            return err(&format!("invalid label value {v:?}"));
                        }
                        if eq {
                            Op::Eq(v)
                        } else {
                            Op::NotEq(v)
                        }
                    }
                    Some(Tok::Gt) | Some(Tok::Lt) => {
                        let gt = toks[i] == Tok::Gt;
                        i += 1;
                        let n = match toks.get(i) {
                            Some(Tok::Ident(v)) => match v.parse::<i64>() {
                                Ok(n) => n,
                                Err(_) => return err(&format!("{v:?} is not an integer")),
                            },
                            _ => return err("expected an integer"),
                        };
                        i += 1;
                        if gt {
                            Op::Gt(n)
                        } else {
                            Op::Lt(n)
                        }
                    }
                    Some(Tok::Ident(w)) if w == "in" || w == "notin" => {
                        let is_in = w == "in";
                        i += 1;
                        if toks.get(i) != Some(&Tok::Open) {
                            return err("expected '('");
                        }
                        i += 1;
                        let mut vals = Vec::new();
                        loop {
                            match toks.get(i) {
                                Some(Tok::Ident(v)) => {
                                    if !is_label_value(v) {
                                        return err(&format!("invalid label value {v:?}"));
                                    }
                                    vals.push(v.clone());
                                    i += 1;
                                }
                                Some(Tok::Comma) | Some(Tok::Close) => vals.push(String::new()),
                                _ => return err("expected a value"),
                            }
                            match toks.get(i) {
                                Some(Tok::Comma) => i += 1,
                                Some(Tok::Close) => {
                                    i += 1;
                                    break;
                                }
                                _ => return err("expected ',' or ')'"),
                            }
                        }
                        if is_in {
                            Op::In(vals)
                        } else {
                            Op::NotIn(vals)
                        }
                    }
                    _ => return err("expected an operator"),
                }
            };
            reqs.push((key, op));
            match toks.get(i) {
                None => break,
                Some(Tok::Comma) => {
                    i += 1;
                    if i >= toks.len() {
                        return err("trailing ','");
                    }
                }
                _ => return err("expected ','"),
            }
        }
        Ok(LabelSelector(reqs))
    }

    /// Whether an object with these labels is selected.
    pub(crate) fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|(k, op)| {
            let v = labels.get(k);
            match op {
                Op::Exists => v.is_some(),
                Op::NotExists => v.is_none(),
                Op::Eq(x) => v == Some(x),
                Op::NotEq(x) => v != Some(x),
                Op::In(xs) => v.is_some_and(|v| xs.contains(v)),
                Op::NotIn(xs) => v.is_none_or(|v| !xs.contains(v)),
                Op::Gt(n) => v
                    .and_then(|v| v.parse::<i64>().ok())
                    .is_some_and(|v| v > *n),
                Op::Lt(n) => v
                    .and_then(|v| v.parse::<i64>().ok())
                    .is_some_and(|v| v < *n),
            }
        })
    }
}

/// The labels of an object (non-string values are skipped; stored objects are
/// validated so there are none).
pub(crate) fn labels_of(obj: &Value) -> BTreeMap<String, String> {
    obj.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// A parsed field selector: all terms must hold.
#[derive(Debug, Clone, Default)]
pub(crate) struct FieldSelector(Vec<(String, bool, String)>);

/// The field selector labels the real API server supports for each resource.
pub(crate) fn supported_fields(res: Resource) -> &'static [&'static str] {
    match res {
        Resource::Pods => &[
            "metadata.name",
            "metadata.namespace",
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        Resource::Nodes => &["metadata.name", "spec.unschedulable"],
        Resource::IpBlocks => &["metadata.name", "metadata.namespace"],
    }
}

fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            out.last_mut().unwrap().push(c);
            if let Some(n) = chars.next() {
                out.last_mut().unwrap().push(n);
            }
        } else if c == sep {
            out.push(String::new());
        } else {
            out.last_mut().unwrap().push(c);
        }
    }
    out
}

fn unescape(s: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(n @ ('\\' | ',' | '=')) => out.push(n),
                _ => return Err(format!("invalid field selector escape in {s:?}")),
            }
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

/// Find the first unescaped occurrence of `pat` in `s`.
fn find_unescaped(s: &str, pat: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            i += 2;
            continue;
        }
        if s[i..].starts_with(pat) {
            return Some(i);
        }
        i += 1;
    }
    None
}

impl FieldSelector {
    /// Parse the `fieldSelector` query parameter for `res`; unknown field
    /// labels are rejected like the real server does.
    pub(crate) fn parse(s: &str, res: Resource) -> Result<Self, String> {
        let mut terms = Vec::new();
        if s.trim().is_empty() {
            return Ok(FieldSelector(terms));
        }
        for part in split_unescaped(s, ',') {
            let (field, eq, value) = if let Some(i) = find_unescaped(&part, "!=") {
                (&part[..i], false, &part[i + 2..])
            } else if let Some(i) = find_unescaped(&part, "==") {
                (&part[..i], true, &part[i + 2..])
            } else if let Some(i) = find_unescaped(&part, "=") {
                (&part[..i], true, &part[i + 1..])
            } else {
                return Err(format!(
                    "invalid selector: '{s}'; can't understand '{part}'"
                ));
            };
            let field = unescape(field.trim())?;
            let value = unescape(value.trim())?;
            if !supported_fields(res).contains(&field.as_str()) {
                return Err(format!(
                    "field label not supported: {field} (supported for {}: {})",
                    res.plural(),
                    supported_fields(res).join(", ")
                ));
            }
            terms.push((field, eq, value));
        }
        Ok(FieldSelector(terms))
    }

    /// Whether `obj` is selected.
    pub(crate) fn matches(&self, obj: &Value) -> bool {
        self.0
            .iter()
            .all(|(field, eq, want)| (field_value(obj, field) == *want) == *eq)
    }
}

/// The string value of a field-selector label of `obj` ("" when absent;
/// booleans as "true"/"false" with the API defaults).
fn field_value(obj: &Value, field: &str) -> String {
    let ptr = format!("/{}", field.replace('.', "/"));
    match obj.pointer(&ptr) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        _ if field == "spec.hostNetwork" || field == "spec.unschedulable" => "false".into(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn label_selector_forms() {
        let l = labels(&[("a", "b"), ("n", "5")]);
        for (sel, want) in [
            ("", true),
            ("a=b", true),
            ("a==b", true),
            ("a!=b", false),
            ("a", true),
            ("!a", false),
            ("!z", true),
            ("z!=b", true),
            ("a=b,n", true),
            ("a=b,z", false),
            ("a in (x, b)", true),
            ("a notin (b)", false),
            ("z notin (b)", true),
            ("n>4", true),
            ("n<5", false),
            ("a=", false),
        ] {
            assert_eq!(
                LabelSelector::parse(sel).unwrap().matches(&l),
                want,
                "{sel}"
            );
        }
        for bad in ["a=b,", "=b", "a in b", "a b", "a=b c", "n>x", "!a=b"] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn field_selector_forms() {
        let pod = json!({"metadata": {"name": "p", "namespace": "ns"}, "spec": {"nodeName": "n1"}});
        let ok = |s| {
            FieldSelector::parse(s, Resource::Pods)
                .unwrap()
                .matches(&pod)
        };
        assert!(ok("spec.nodeName=n1"));
        assert!(ok("spec.nodeName==n1,metadata.namespace=ns"));
        assert!(!ok("spec.nodeName!=n1"));
        assert!(ok("spec.hostNetwork=false"));
        assert!(ok("status.phase="));
        assert!(FieldSelector::parse("spec.nodeName=x", Resource::Nodes).is_err());
        assert!(FieldSelector::parse("metadata.labels=x", Resource::Pods).is_err());
        assert!(FieldSelector::parse("nonsense", Resource::Pods).is_err());
    }
}
