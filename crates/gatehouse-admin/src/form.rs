//! Kong-style form bodies (`curl -d name=orders -d 'paths[]=/orders' -d config.minute=5`):
//! decoded into the same JSON an `application/json` body gives, then typed by the entity's
//! schema — as Kong's admin API does, so admin scripts written for Kong work unchanged.

use serde_json::{Map, Value};

/// One step of a form key: `config.origins[]` is `config`, `origins`, append.
#[derive(Debug, PartialEq)]
enum Step {
    Field(String),
    Index(usize),
    Append,
}

/// Why a form body could not be read.
#[derive(Debug, thiserror::Error)]
#[error("form field `{key}`: {reason}")]
pub struct FormError {
    key: String,
    reason: &'static str,
}

/// Longest nesting of a form key (a hostile `a.a.a.…` gets an error, not deep recursion).
const MAX_DEPTH: usize = 32;
/// Highest `[n]` index accepted (Kong's arrays are short; a huge index is not a way to
/// make the server allocate).
const MAX_INDEX: usize = 1000;

/// Decodes `application/x-www-form-urlencoded` into JSON with string leaves: dots nest
/// objects, `[]` appends, `[n]` (1-based, as in Kong) places, a repeated key makes a list.
pub fn decode(body: &[u8]) -> Result<Value, FormError> {
    let mut root = Value::Object(Map::new());
    for (key, value) in form_urlencoded::parse(body) {
        let steps = steps(&key)?;
        put(&mut root, &steps, Value::String(value.into_owned())).map_err(|reason| FormError {
            key: key.to_string(),
            reason,
        })?;
    }
    Ok(root)
}

fn steps(key: &str) -> Result<Vec<Step>, FormError> {
    let bad = |reason| FormError {
        key: key.to_string(),
        reason,
    };
    let mut out = Vec::new();
    for part in key.split('.') {
        let (name, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if name.is_empty() {
            return Err(bad("empty name"));
        }
        out.push(Step::Field(name.to_string()));
        while let Some(inner) = rest.strip_prefix('[') {
            let end = inner.find(']').ok_or_else(|| bad("unclosed `[`"))?;
            out.push(match &inner[..end] {
                "" => Step::Append,
                n => match n.parse::<usize>() {
                    Ok(i) if (1..=MAX_INDEX).contains(&i) => Step::Index(i - 1),
                    _ => return Err(bad("an index must be 1-1000")),
                },
            });
            rest = &inner[end + 1..];
        }
        if !rest.is_empty() {
            return Err(bad("text after `]`"));
        }
    }
    if out.len() > MAX_DEPTH {
        return Err(bad("nested too deep"));
    }
    Ok(out)
}

fn put(slot: &mut Value, steps: &[Step], value: Value) -> Result<(), &'static str> {
    let Some((step, rest)) = steps.split_first() else {
        // A key given twice (`hosts=a&hosts=b`) is a list, as in Kong.
        match slot {
            Value::Null => *slot = value,
            Value::Array(a) => a.push(value),
            Value::String(_) => {
                let first = slot.take();
                *slot = Value::Array(vec![first, value]);
            }
            _ => return Err("given both as a value and as a group"),
        }
        return Ok(());
    };
    match step {
        Step::Field(name) => {
            if slot.is_null() {
                *slot = Value::Object(Map::new());
            }
            let Value::Object(m) = slot else {
                return Err("given both as a value and as a group");
            };
            put(m.entry(name.clone()).or_insert(Value::Null), rest, value)
        }
        Step::Index(_) | Step::Append if slot.is_null() => {
            *slot = Value::Array(Vec::new());
            put(slot, steps, value)
        }
        Step::Append => {
            let Value::Array(a) = slot else {
                return Err("given both as a list and as something else");
            };
            a.push(Value::Null);
            let last = a.len() - 1;
            put(&mut a[last], rest, value)
        }
        Step::Index(i) => {
            let Value::Array(a) = slot else {
                return Err("given both as a list and as something else");
            };
            if a.len() <= *i {
                a.resize(*i + 1, Value::Null);
            }
            put(&mut a[*i], rest, value)
        }
    }
}

/// Turns the strings of a decoded form into the types `schema` asks for (numbers,
/// booleans, lists, null for an empty value of an optional field). What does not fit is
/// left as it is, for validation to report with the field's path.
pub fn coerce(value: &mut Value, schema: &Value, schemas: &Map<String, Value>) {
    let schema = resolve(schema, schemas);
    if let Some(alts) = schema
        .get("anyOf")
        .or_else(|| schema.get("oneOf"))
        .or_else(|| schema.get("allOf"))
        .and_then(Value::as_array)
    {
        // Typed by the first alternative that is more than `null` (`Option<T>`).
        let typed = alts.iter().find(|a| {
            let a = resolve(a, schemas);
            (a.get("type").is_some() && a["type"] != "null") || a.get("properties").is_some()
        });
        // `field=` clears an optional non-text field (`Option<T>`, or a merge patch's
        // null); for a text field it is the empty text.
        let nullable = alts
            .iter()
            .any(|a| types(resolve(a, schemas)).contains(&"null"));
        let text = typed.is_some_and(|a| types(resolve(a, schemas)).contains(&"string"));
        if nullable && !text && value.as_str() == Some("") {
            *value = Value::Null;
            return;
        }
        if let Some(alt) = typed {
            if schema.get("type").is_none() && schema.get("properties").is_none() {
                coerce(value, alt, schemas);
                return;
            }
        }
    }
    let types = types(schema);
    match value {
        Value::String(s) => {
            let s = s.clone();
            // Kong: `field=` clears an optional field (text fields take it as the empty
            // text, which their own rules judge).
            if s.is_empty() && types.contains(&"null") && !types.contains(&"string") {
                *value = Value::Null;
            } else if types.contains(&"array") {
                let mut item = Value::String(s);
                if let Some(items) = schema.get("items") {
                    coerce(&mut item, items, schemas);
                }
                *value = Value::Array(vec![item]);
            } else if types.contains(&"integer") || types.contains(&"number") {
                if let Ok(n) = s.parse::<i64>() {
                    *value = Value::from(n);
                } else if let Ok(n) = s.parse::<u64>() {
                    *value = Value::from(n);
                } else if let Some(n) = s.parse::<f64>().ok().and_then(serde_json::Number::from_f64)
                {
                    if types.contains(&"number") {
                        *value = Value::Number(n);
                    }
                }
            } else if types.contains(&"boolean") {
                match s.as_str() {
                    "true" => *value = Value::Bool(true),
                    "false" => *value = Value::Bool(false),
                    _ => {}
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for item in items.iter_mut() {
                    coerce(item, item_schema, schemas);
                }
            }
        }
        Value::Object(m) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let extra = schema.get("additionalProperties").filter(|a| a.is_object());
            for (k, v) in m.iter_mut() {
                if let Some(p) = props.and_then(|p| p.get(k)).or(extra) {
                    coerce(v, p, schemas);
                }
            }
        }
        _ => {}
    }
}

fn resolve<'a>(schema: &'a Value, schemas: &'a Map<String, Value>) -> &'a Value {
    match schema
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("#/components/schemas/"))
        .and_then(|name| schemas.get(name))
    {
        Some(target) => target,
        None => schema,
    }
}

/// The JSON types a schema allows (`"type": "string"` or `["integer", "null"]`).
pub(crate) fn types(schema: &Value) -> Vec<&str> {
    match schema.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kong_keys() {
        let v = decode(b"name=orders&paths[]=/a&paths[]=/b&config.minute=5&hosts=x&hosts=y&m[2]=b&m[1]=a&service.id=s1&e=")
            .unwrap();
        assert_eq!(
            v,
            json!({"name": "orders", "paths": ["/a", "/b"], "config": {"minute": "5"},
                "hosts": ["x", "y"], "m": ["a", "b"], "service": {"id": "s1"}, "e": ""})
        );
    }

    #[test]
    fn hostile_keys_are_errors() {
        for body in [
            &b"a[=1"[..],
            b"a[0]=1",
            b"a[99999999999]=1",
            b"a[1]x=1",
            b".a=1",
            b"a=1&a.b=2",
            b"a.b=1&a=2",
            b"a[]=1&a.b=2",
        ] {
            assert!(decode(body).is_err(), "{}", String::from_utf8_lossy(body));
        }
        let deep = format!("{}=1", vec!["a"; 40].join("."));
        assert!(decode(deep.as_bytes()).is_err());
    }

    #[test]
    fn typed_by_schema() {
        let schemas = Map::new();
        let schema = json!({"type": "object", "properties": {
            "port": {"type": "integer"}, "ok": {"type": "boolean"},
            "hosts": {"type": "array", "items": {"type": "string"}},
            "nums": {"type": "array", "items": {"type": "integer"}},
            "name": {"type": ["string", "null"]}, "id": {"type": "string"},
            "limit": {"type": ["integer", "null"]},
            "mode": {"oneOf": [{"type": "null"}, {"type": "string", "enum": ["a"]}]},
            "cfg": {"type": "object", "additionalProperties": {"type": "number"}},
        }});
        let mut v = json!({"port": "80", "ok": "true", "hosts": "a", "nums": ["1", "x"],
            "name": "", "id": "", "limit": "", "mode": "", "cfg": {"a": "1.5"}, "other": "5"});
        coerce(&mut v, &schema, &schemas);
        assert_eq!(
            v,
            json!({"port": 80, "ok": true, "hosts": ["a"], "nums": [1, "x"], "name": "",
                "id": "", "limit": null, "mode": "", "cfg": {"a": 1.5}, "other": "5"})
        );
    }
}
