//! A field some levels down a JSON value.

use serde_json::Value;

/// The value at `path` (object keys, outermost first): what [`Value::pointer`] finds at
/// `/a/b`, without reading and unescaping a pointer's text, which costs more than the lookups
/// themselves on the paths every statement takes (its index terms when stored and when a page
/// is filtered, its contributions in the projector).
pub fn at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(value, |value, key| value.get(key))
}

/// [`at`], to change what is there.
pub fn at_mut<'a>(value: &'a mut Value, path: &[&str]) -> Option<&'a mut Value> {
    path.iter().try_fold(value, |value, key| value.get_mut(key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// For object keys, the paths find what the pointers find: present, absent, through a
    /// value that is no object, and the whole value for no path.
    #[test]
    fn paths_find_what_pointers_find() {
        let mut statement = json!({
            "verb": {"id": "https://example.org/v"},
            "context": {"extensions": {"https://example.org/e": [1, 2]}, "registration": null},
            "result": {"score": 0.5},
        });
        for (path, pointer) in [
            (&["verb", "id"][..], "/verb/id"),
            (&["context", "extensions"][..], "/context/extensions"),
            (&["context", "registration"][..], "/context/registration"),
            (&["context", "missing"][..], "/context/missing"),
            (&["result", "score", "scaled"][..], "/result/score/scaled"),
            (&["verb", "id", "deeper"][..], "/verb/id/deeper"),
            (&["nothing"][..], "/nothing"),
            (&[][..], ""),
        ] {
            assert_eq!(
                at(&statement, path),
                statement.pointer(pointer),
                "{pointer}"
            );
        }
        assert_eq!(
            at(&statement, &["verb", "id"]),
            Some(&json!("https://example.org/v"))
        );
        if let Some(id) = at_mut(&mut statement, &["verb", "id"]) {
            *id = json!("https://example.org/w");
        }
        assert_eq!(statement["verb"]["id"], "https://example.org/w");
        assert!(at_mut(&mut statement, &["verb", "none"]).is_none());
    }
}
