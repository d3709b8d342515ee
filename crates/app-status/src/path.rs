//! The JSONPath subset mappings use: `$`, `.key`, `['odd key']`, `[n]`, `[*]`, `.*`.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
    Wildcard,
}

/// A parsed path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPath {
    text: String,
    segments: Vec<Segment>,
}

/// A path that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid JSON path {path:?}: {reason}")]
pub struct PathError {
    path: String,
    reason: String,
}

impl JsonPath {
    /// Parses a path; it must start with `$`.
    pub fn parse(text: &str) -> Result<Self, PathError> {
        let err = |reason: &str| PathError {
            path: text.to_owned(),
            reason: reason.to_owned(),
        };
        let rest = text
            .trim()
            .strip_prefix('$')
            .ok_or_else(|| err("must start with `$`"))?;
        let chars: Vec<char> = rest.chars().collect();
        let mut segments = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            match chars[i] {
                '.' => {
                    i += 1;
                    if chars.get(i) == Some(&'*') {
                        segments.push(Segment::Wildcard);
                        i += 1;
                        continue;
                    }
                    let start = i;
                    while i < chars.len() && chars[i] != '.' && chars[i] != '[' {
                        i += 1;
                    }
                    if start == i {
                        return Err(err("empty key after `.`"));
                    }
                    let key: String = chars[start..i].iter().collect();
                    if key.contains([']', '\'', '"', ' ']) {
                        return Err(err("use ['key'] for keys with spaces, quotes or brackets"));
                    }
                    segments.push(Segment::Key(key));
                }
                '[' => {
                    i += 1;
                    match chars.get(i) {
                        Some(&q @ ('\'' | '"')) => {
                            i += 1;
                            let mut key = String::new();
                            loop {
                                match chars.get(i) {
                                    None => return Err(err("unterminated quoted key")),
                                    Some('\\') => {
                                        if let Some(c) = chars.get(i + 1) {
                                            key.push(*c);
                                        }
                                        i += 2;
                                    }
                                    Some(c) if *c == q => {
                                        i += 1;
                                        break;
                                    }
                                    Some(c) => {
                                        key.push(*c);
                                        i += 1;
                                    }
                                }
                            }
                            segments.push(Segment::Key(key));
                        }
                        Some('*') => {
                            i += 1;
                            segments.push(Segment::Wildcard);
                        }
                        _ => {
                            let start = i;
                            while i < chars.len() && chars[i].is_ascii_digit() {
                                i += 1;
                            }
                            let digits: String = chars[start..i].iter().collect();
                            let n = digits.parse::<usize>().map_err(|_| {
                                err("expected 'key', a non-negative index or * inside [ ]")
                            })?;
                            segments.push(Segment::Index(n));
                        }
                    }
                    if chars.get(i) != Some(&']') {
                        return Err(err("missing `]`"));
                    }
                    i += 1;
                }
                c => return Err(err(&format!("unexpected character {c:?}"))),
            }
        }
        Ok(Self {
            text: text.to_owned(),
            segments,
        })
    }

    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the path can match several nodes.
    pub fn has_wildcard(&self) -> bool {
        self.segments.contains(&Segment::Wildcard)
    }

    /// The single node a wildcard-free path points at (`None` when absent). With wildcards,
    /// the first match.
    pub fn get<'a>(&self, root: &'a Value) -> Option<&'a Value> {
        self.select(root).into_iter().next().map(|(_, v)| v)
    }

    /// All matches, each with the key or index of its last step.
    pub fn select<'a>(&self, root: &'a Value) -> Vec<(Option<String>, &'a Value)> {
        let mut current: Vec<(Option<String>, &'a Value)> = vec![(None, root)];
        for seg in &self.segments {
            let mut next = Vec::new();
            for (_, v) in current {
                match seg {
                    Segment::Key(k) => {
                        if let Some(child) = v.get(k.as_str()) {
                            next.push((Some(k.clone()), child));
                        }
                    }
                    Segment::Index(n) => {
                        if let Some(child) = v.get(*n) {
                            next.push((Some(n.to_string()), child));
                        }
                    }
                    Segment::Wildcard => next.extend(children(v)),
                }
            }
            current = next;
        }
        current
    }
}

/// The members of an object (with keys) or elements of an array (with indexes).
pub fn children(v: &Value) -> Vec<(Option<String>, &Value)> {
    match v {
        Value::Object(m) => m.iter().map(|(k, v)| (Some(k.clone()), v)).collect(),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .map(|(i, v)| (Some(i.to_string()), v))
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_and_selects() {
        let doc = json!({"a": {"b c": [10, 20, {"d": 3}]}, "xs": [{"id": 1}, {"id": 2}], "m": {"k1": 1, "k2": 2}});
        let p = |s: &str| JsonPath::parse(s).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p("$").get(&doc), Some(&doc));
        assert_eq!(p("$.a['b c'][1]").get(&doc), Some(&json!(20)));
        assert_eq!(p("$.a[\"b c\"][2].d").get(&doc), Some(&json!(3)));
        assert_eq!(p("$.missing").get(&doc), None);
        assert_eq!(p("$.a['b c'][9]").get(&doc), None);
        let ids: Vec<_> = p("$.xs[*].id")
            .select(&doc)
            .into_iter()
            .map(|(_, v)| v.clone())
            .collect();
        assert_eq!(ids, vec![json!(1), json!(2)]);
        let keys: Vec<_> = p("$.m.*")
            .select(&doc)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, vec![Some("k1".to_owned()), Some("k2".to_owned())]);
        assert!(p("$.xs[*]").has_wildcard());
    }

    #[test]
    fn rejects_bad_paths() {
        for bad in ["a.b", "$.", "$[", "$['x'", "$[x]", "$.a]", "$[-1]"] {
            assert!(JsonPath::parse(bad).is_err(), "{bad}");
        }
    }
}
