//! Series selectors as Prometheus's federation endpoint takes them in `match[]`:
//! `name`, `{label="v"}`, `name{a=~"re.*", b!="x", c!~'y'}`.

use tidegauge_core::LabelSet;

/// Selectors one request may carry, and the bytes of all of them together: each regex is
/// compiled per request, so the work a request can ask for is bounded.
pub const MAX_SELECTORS: usize = 64;
/// See [`MAX_SELECTORS`].
pub const MAX_SELECTOR_BYTES: usize = 16 * 1024;
/// Compiled size of one regular expression at most (the regex crate's default is 10 MiB).
const REGEX_SIZE_LIMIT: usize = 256 * 1024;

/// One label matcher.
#[derive(Debug, Clone)]
enum Matcher {
    Equal(String, String),
    NotEqual(String, String),
    Regex(String, regex::Regex),
    NotRegex(String, regex::Regex),
}

impl Matcher {
    fn label(&self) -> &str {
        match self {
            Self::Equal(l, _) | Self::NotEqual(l, _) | Self::Regex(l, _) | Self::NotRegex(l, _) => {
                l
            }
        }
    }

    fn matches(&self, value: &str) -> bool {
        match self {
            Self::Equal(_, v) => value == v,
            Self::NotEqual(_, v) => value != v,
            Self::Regex(_, r) => r.is_match(value),
            Self::NotRegex(_, r) => !r.is_match(value),
        }
    }
}

/// A parsed series selector.
#[derive(Debug, Clone)]
pub struct Selector {
    matchers: Vec<Matcher>,
}

impl Selector {
    /// Parses one selector; the error says what is wrong and where.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut p = Parser {
            s: text.as_bytes(),
            at: 0,
            text,
        };
        let mut matchers = Vec::new();
        p.skip_space();
        if let Some(name) = p.identifier(true) {
            matchers.push(Matcher::Equal("__name__".into(), name));
        }
        p.skip_space();
        if p.eat(b'{') {
            loop {
                p.skip_space();
                if p.eat(b'}') {
                    break;
                }
                let label = p
                    .identifier(false)
                    .ok_or_else(|| p.error("expected a label name"))?;
                p.skip_space();
                let op = if p.eat_str("=~") {
                    "=~"
                } else if p.eat_str("!~") {
                    "!~"
                } else if p.eat_str("!=") {
                    "!="
                } else if p.eat(b'=') {
                    "="
                } else {
                    return Err(p.error("expected =, !=, =~ or !~"));
                };
                p.skip_space();
                let value = p.string()?;
                let anchored = |v: &str| {
                    regex::RegexBuilder::new(&format!("^(?:{v})$"))
                        .size_limit(REGEX_SIZE_LIMIT)
                        .build()
                        .map_err(|e| format!("{text:?}: invalid regular expression {v:?}: {e}"))
                };
                matchers.push(match op {
                    "=" => Matcher::Equal(label, value),
                    "!=" => Matcher::NotEqual(label, value),
                    "=~" => Matcher::Regex(label, anchored(&value)?),
                    _ => Matcher::NotRegex(label, anchored(&value)?),
                });
                p.skip_space();
                if p.eat(b',') {
                    continue;
                }
                if p.eat(b'}') {
                    break;
                }
                return Err(p.error("expected , or }"));
            }
        }
        p.skip_space();
        if p.at != p.s.len() {
            return Err(p.error("unexpected text after the selector"));
        }
        if matchers.is_empty() {
            return Err(format!(
                "{text:?}: a selector needs a metric name or a label matcher"
            ));
        }
        if matchers.iter().all(|m| m.matches("")) {
            return Err(format!(
                "{text:?}: a selector must contain at least one matcher that does not match the empty string"
            ));
        }
        Ok(Self { matchers })
    }

    /// Whether the series of `family` with `labels` is selected.
    pub fn matches(&self, family_name: &str, labels: &LabelSet) -> bool {
        self.matchers.iter().all(|m| {
            let value = if m.label() == "__name__" {
                family_name
            } else {
                labels.get(m.label()).unwrap_or("")
            };
            m.matches(value)
        })
    }
}

struct Parser<'a> {
    s: &'a [u8],
    at: usize,
    text: &'a str,
}

impl Parser<'_> {
    fn error(&self, what: &str) -> String {
        format!("{:?}: {what} at position {}", self.text, self.at + 1)
    }

    fn skip_space(&mut self) {
        while self.s.get(self.at).is_some_and(u8::is_ascii_whitespace) {
            self.at += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.s.get(self.at) == Some(&c) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn eat_str(&mut self, t: &str) -> bool {
        if self.s[self.at..].starts_with(t.as_bytes()) {
            self.at += t.len();
            true
        } else {
            false
        }
    }

    /// `[a-zA-Z_][a-zA-Z0-9_]*`, with `:` too for metric names.
    fn identifier(&mut self, colons: bool) -> Option<String> {
        let start = self.at;
        while let Some(&c) = self.s.get(self.at) {
            let ok = c.is_ascii_alphabetic()
                || c == b'_'
                || (colons && c == b':')
                || (self.at > start && c.is_ascii_digit());
            if !ok {
                break;
            }
            self.at += 1;
        }
        (self.at > start).then(|| String::from_utf8_lossy(&self.s[start..self.at]).into_owned())
    }

    /// A quoted string: `"…"` or `'…'` with Go escapes, or a raw `` `…` ``.
    fn string(&mut self) -> Result<String, String> {
        let quote = match self.s.get(self.at) {
            Some(&q @ (b'"' | b'\'' | b'`')) => q,
            _ => return Err(self.error("expected a quoted label value")),
        };
        self.at += 1;
        let mut out = Vec::new();
        loop {
            let Some(&c) = self.s.get(self.at) else {
                return Err(self.error("unterminated string"));
            };
            self.at += 1;
            if c == quote {
                break;
            }
            if c == b'\\' && quote != b'`' {
                let Some(&e) = self.s.get(self.at) else {
                    return Err(self.error("unterminated string"));
                };
                self.at += 1;
                match e {
                    b'n' => out.push(b'\n'),
                    b't' => out.push(b'\t'),
                    b'r' => out.push(b'\r'),
                    b'a' => out.push(0x07),
                    b'b' => out.push(0x08),
                    b'f' => out.push(0x0c),
                    b'v' => out.push(0x0b),
                    b'\\' | b'"' | b'\'' => out.push(e),
                    // Go's escapes, as PromQL strings take them: \xHH, \uHHHH, \UHHHHHHHH, \ooo.
                    b'x' | b'u' | b'U' | b'0'..=b'7' => {
                        let (digits, radix) = match e {
                            b'x' => (2, 16),
                            b'u' => (4, 16),
                            b'U' => (8, 16),
                            _ => (2, 8),
                        };
                        let start = if radix == 8 { self.at - 1 } else { self.at };
                        let end = start + digits + usize::from(radix == 8);
                        let code = self
                            .s
                            .get(start..end)
                            .and_then(|d| std::str::from_utf8(d).ok())
                            .and_then(|d| u32::from_str_radix(d, radix).ok())
                            .ok_or_else(|| self.error("invalid escape sequence"))?;
                        self.at = end;
                        if matches!(e, b'u' | b'U') {
                            let c = char::from_u32(code)
                                .ok_or_else(|| self.error("invalid Unicode escape"))?;
                            out.extend_from_slice(c.to_string().as_bytes());
                        } else {
                            out.push(
                                u8::try_from(code)
                                    .map_err(|_| self.error("invalid escape sequence"))?,
                            );
                        }
                    }
                    _ => return Err(self.error("unknown escape sequence")),
                }
            } else {
                out.push(c);
            }
        }
        String::from_utf8(out).map_err(|_| self.error("label value is not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidegauge_core::labels as l;

    #[test]
    fn selectors_match_as_prometheus_does() {
        let s = Selector::parse(r#"tank_bins_total{dashboard=~"pier.*"}"#).unwrap();
        assert!(s.matches("tank_bins_total", &l([("dashboard", "pier-1")]).into()));
        assert!(
            !s.matches("tank_bins_total", &l([("dashboard", "xpier")]).into()),
            "anchored"
        );
        assert!(!s.matches("tank_bins", &l([("dashboard", "pier")]).into()));
        let s = Selector::parse(r#"{dataset="live-pier", site!='x', a!~`b.*`}"#).unwrap();
        assert!(s.matches("anything", &l([("dataset", "live-pier")]).into()));
        assert!(!s.matches(
            "anything",
            &l([("dataset", "live-pier"), ("site", "x")]).into()
        ));
        assert!(!s.matches(
            "anything",
            &l([("dataset", "live-pier"), ("a", "bc")]).into()
        ));
        let s = Selector::parse("up").unwrap();
        assert!(s.matches("up", &l([]).into()));
        assert!(
            Selector::parse(r#"{job="a\"b"}"#)
                .unwrap()
                .matches("x", &l([("job", "a\"b")]).into())
        );
    }

    #[test]
    fn malformed_selectors_say_why() {
        for (text, want) in [
            ("", "needs a metric name"),
            ("{}", "needs a metric name"),
            (r#"{a=""}"#, "does not match the empty string"),
            (r#"{a=~".*"}"#, "does not match the empty string"),
            (r#"up{a="b""#, "expected , or }"),
            (r#"up{a="b"#, "unterminated string"),
            ("up{a=b}", "quoted label value"),
            (r#"up{a=~"("}"#, "invalid regular expression"),
            (r#"up{1a="b"}"#, "expected a label name"),
            (r#"up{a=="b"}"#, "quoted label value"),
            ("up down", "unexpected text"),
        ] {
            let e = Selector::parse(text).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
    }
}
