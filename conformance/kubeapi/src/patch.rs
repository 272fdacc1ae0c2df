//! JSON merge patch (RFC 7386) and JSON patch (RFC 6902).

use serde_json::{Map, Value};

/// Apply an RFC 7386 merge patch to `target` in place.
pub(crate) fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            let t = target.as_object_mut().expect("just made an object");
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// Decode an RFC 6901 JSON pointer into reference tokens.
fn pointer_tokens(ptr: &str) -> Result<Vec<String>, String> {
    if ptr.is_empty() {
        return Ok(Vec::new());
    }
    if !ptr.starts_with('/') {
        return Err(format!("invalid JSON pointer {ptr:?}"));
    }
    Ok(ptr[1..]
        .split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect())
}

fn array_index(tok: &str, len: usize, allow_end: bool) -> Result<usize, String> {
    if allow_end && tok == "-" {
        return Ok(len);
    }
    if tok.is_empty()
        || (tok.len() > 1 && tok.starts_with('0'))
        || !tok.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(format!("invalid array index {tok:?}"));
    }
    let i: usize = tok
        .parse()
        .map_err(|_| format!("invalid array index {tok:?}"))?;
    let max = if allow_end {
        len
    } else {
        len.saturating_sub(1)
    };
    if i > max || (!allow_end && len == 0) {
        return Err(format!("array index {i} out of bounds"));
    }
    Ok(i)
}

/// The parent container of the location `toks` and the last token.
fn parent_mut<'a>(doc: &'a mut Value, toks: &[String]) -> Result<(&'a mut Value, String), String> {
    let (last, parents) = toks
        .split_last()
        .ok_or("cannot address the document root")?;
    let mut cur = doc;
    for t in parents {
        cur = match cur {
            Value::Object(m) => m
                .get_mut(t)
                .ok_or_else(|| format!("path element {t:?} not found"))?,
            Value::Array(a) => {
                let i = array_index(t, a.len(), false)?;
                &mut a[i]
            }
            _ => return Err(format!("path element {t:?} is not a container")),
        };
    }
    Ok((cur, last.clone()))
}

fn get<'a>(doc: &'a Value, toks: &[String]) -> Result<&'a Value, String> {
    let mut cur = doc;
    for t in toks {
        cur = match cur {
            Value::Object(m) => m
                .get(t)
                .ok_or_else(|| format!("path element {t:?} not found"))?,
            Value::Array(a) => &a[array_index(t, a.len(), false)?],
            _ => return Err(format!("path element {t:?} is not a container")),
        };
    }
    Ok(cur)
}

fn add(doc: &mut Value, toks: &[String], value: Value) -> Result<(), String> {
    if toks.is_empty() {
        *doc = value;
        return Ok(());
    }
    let (parent, last) = parent_mut(doc, toks)?;
    match parent {
        Value::Object(m) => {
            m.insert(last, value);
            Ok(())
        }
        Value::Array(a) => {
            let i = array_index(&last, a.len(), true)?;
            a.insert(i, value);
            Ok(())
        }
        _ => Err("add target parent is not a container".into()),
    }
}

fn remove(doc: &mut Value, toks: &[String]) -> Result<Value, String> {
    let (parent, last) = parent_mut(doc, toks)?;
    match parent {
        Value::Object(m) => m
            .remove(&last)
            .ok_or_else(|| format!("path element {last:?} not found")),
        Value::Array(a) => {
            let i = array_index(&last, a.len(), false)?;
            Ok(a.remove(i))
        }
        _ => Err("remove target parent is not a container".into()),
    }
}

/// Errors from [`json_patch`]: a malformed patch document (400) or a patch
/// that cannot be applied (422).
#[derive(Debug)]
pub(crate) enum PatchError {
    Malformed(String),
    Failed(String),
}

/// Apply an RFC 6902 JSON patch to `doc`.
pub(crate) fn json_patch(doc: &mut Value, patch: &Value) -> Result<(), PatchError> {
    let ops = patch
        .as_array()
        .ok_or_else(|| PatchError::Malformed("a JSON patch must be an array".into()))?;
    for op in ops {
        let o = op.as_object().ok_or_else(|| {
            PatchError::Malformed("a JSON patch operation must be an object".into())
        })?;
        let name = o
            .get("op")
            .and_then(Value::as_str)
            .ok_or_else(|| PatchError::Malformed("operation without \"op\"".into()))?;
        let path = o
            .get("path")
            .and_then(Value::as_str)
            .ok_or_else(|| PatchError::Malformed(format!("{name} operation without \"path\"")))?;
        let toks = pointer_tokens(path).map_err(PatchError::Malformed)?;
        let value = || {
            o.get("value")
                .cloned()
                .ok_or_else(|| PatchError::Malformed(format!("{name} operation without \"value\"")))
        };
        let from = || -> Result<Vec<String>, PatchError> {
            let f = o.get("from").and_then(Value::as_str).ok_or_else(|| {
                PatchError::Malformed(format!("{name} operation without \"from\""))
            })?;
            pointer_tokens(f).map_err(PatchError::Malformed)
        };
        let res = match name {
            "add" => add(doc, &toks, value()?),
            "remove" => remove(doc, &toks).map(drop),
            "replace" => {
                let v = value()?;
                get(doc, &toks).map(drop).and_then(|_| {
                    if toks.is_empty() {
                        *doc = v;
                        Ok(())
                    } else {
                        remove(doc, &toks).and_then(|_| add(doc, &toks, v))
                    }
                })
            }
            "move" => {
                let f = from()?;
                if toks.len() > f.len() && toks[..f.len()] == f[..] {
                    Err("cannot move a value into one of its children".into())
                } else {
                    remove(doc, &f).and_then(|v| add(doc, &toks, v))
                }
            }
            "copy" => {
                let f = from()?;
                get(doc, &f).cloned().and_then(|v| add(doc, &toks, v))
            }
            "test" => {
                let v = value()?;
                get(doc, &toks).and_then(|cur| {
                    if *cur == v {
                        Ok(())
                    } else {
                        Err(format!("testing value {path} failed"))
                    }
                })
            }
            other => {
                return Err(PatchError::Malformed(format!(
                    "unknown operation {other:?}"
                )))
            }
        };
        res.map_err(PatchError::Failed)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge() {
        let mut t = json!({"a": {"b": 1, "c": 2}, "d": [1]});
        merge_patch(&mut t, &json!({"a": {"b": null, "e": 3}, "d": [2]}));
        assert_eq!(t, json!({"a": {"c": 2, "e": 3}, "d": [2]}));
    }

    #[test]
    fn json_ops() {
        let mut t = json!({"a": [1, 2], "b": {"c": "x"}});
        json_patch(
            &mut t,
            &json!([
                {"op": "test", "path": "/b/c", "value": "x"},
                {"op": "add", "path": "/a/-", "value": 3},
                {"op": "add", "path": "/a/0", "value": 0},
                {"op": "replace", "path": "/b/c", "value": "y"},
                {"op": "copy", "from": "/b", "path": "/e"},
                {"op": "move", "from": "/e/c", "path": "/f"},
                {"op": "remove", "path": "/a/1"}
            ]),
        )
        .unwrap();
        assert_eq!(
            t,
            json!({"a": [0, 2, 3], "b": {"c": "y"}, "e": {}, "f": "y"})
        );
        assert!(matches!(
            json_patch(&mut t, &json!([{"op": "test", "path": "/f", "value": "z"}])),
            Err(PatchError::Failed(_))
        ));
        assert!(matches!(
            json_patch(&mut t, &json!([{"op": "remove", "path": "/nope"}])),
            Err(PatchError::Failed(_))
        ));
        assert!(matches!(
            json_patch(&mut t, &json!({"op": "x"})),
            Err(PatchError::Malformed(_))
        ));
    }
}
