//! The bounded form of a JSON record too large for a datagram: every string longer than a bound
//! is cut to it, and a `cutToFit` member lists each cut string (a JSON pointer) with its full
//! length. The mark sits outside every string, so a name cannot fake it or hide it, and a process
//! cannot make its own events vanish by inflating its paths.

use serde_json::Value;

/// Cuts every string of the JSON object `json` longer than `max` bytes; `None` if `json` is not
/// a JSON object (the `text` format) or nothing was long enough to cut.
pub fn cut(json: &[u8], max: usize) -> Option<Vec<u8>> {
    let mut v: Value = serde_json::from_slice(json).ok()?;
    if !v.is_object() {
        return None;
    }
    let mut cuts = Vec::new();
    walk(&mut v, &mut String::new(), max, &mut cuts);
    if cuts.is_empty() {
        return None;
    }
    let marks: Vec<Value> = cuts
        .into_iter()
        .map(|(field, bytes)| serde_json::json!({ "field": field, "bytes": bytes }))
        .collect();
    v.as_object_mut()?
        .insert("cutToFit".into(), Value::Array(marks));
    let mut out = Vec::with_capacity(json.len().min(1 << 16));
    crate::format::json::write(&mut out, &v).ok()?;
    Some(out)
}

fn walk(v: &mut Value, pointer: &mut String, max: usize, cuts: &mut Vec<(String, usize)>) {
    match v {
        Value::String(s) if s.len() > max => {
            let mut end = max;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            cuts.push((pointer.clone(), s.len()));
            s.truncate(end);
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                let len = pointer.len();
                pointer.push('/');
                pointer.push_str(&i.to_string());
                walk(item, pointer, max, cuts);
                pointer.truncate(len);
            }
        }
        Value::Object(members) => {
            for (k, item) in members.iter_mut() {
                let len = pointer.len();
                pointer.push('/');
                pointer.push_str(&k.replace('~', "~0").replace('/', "~1"));
                walk(item, pointer, max, cuts);
                pointer.truncate(len);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_strings_are_cut_at_a_char_boundary_and_listed() {
        let long = "é".repeat(100); // 200 bytes
        let json = serde_json::json!({
            "a": long, "b": ["x", "y".repeat(50)], "c/d": { "e": 5 }, "short": "ok"
        });
        let out = cut(json.to_string().as_bytes(), 11).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["a"], "é".repeat(5));
        assert_eq!(v["b"][1], "y".repeat(11));
        assert_eq!(v["short"], "ok");
        assert_eq!(v["c/d"]["e"], 5);
        let marks = v["cutToFit"].as_array().unwrap();
        assert!(marks.contains(&serde_json::json!({"field": "/a", "bytes": 200})));
        assert!(marks.contains(&serde_json::json!({"field": "/b/1", "bytes": 50})));
        assert_eq!(marks.len(), 2);
        assert!(cut(b"12:00 text line", 4).is_none());
        assert!(cut(br#"{"a":"b"}"#, 4).is_none());
    }
}
