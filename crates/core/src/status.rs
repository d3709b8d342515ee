//! What a collector shows of itself on the host's landing page: structured status that the host
//! renders (failures first, times relative), so no collector writes HTML.

use std::time::Duration;

/// A collector's status: sections of rows (datasets, boards, push groups...).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Status {
    /// Sections, in the collector's order.
    pub sections: Vec<Section>,
}

/// One table of the status.
#[derive(Debug, Clone, PartialEq)]
pub struct Section {
    /// Title (`Datasets`, `Boards`).
    pub title: String,
    /// Column headings, one per cell of each row.
    pub columns: Vec<String>,
    /// Rows; the host shows failing ones first.
    pub rows: Vec<Row>,
}

/// One row: its health and its cells.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// How this item is doing.
    pub health: Health,
    /// Cells, one per column.
    pub cells: Vec<Cell>,
}

/// How an item is doing, worst first (the order the host shows rows in).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Health {
    /// Broken: an upstream down, a request failing.
    Failing,
    /// Working but not as it should: a stale dataset, a group about to expire.
    Warning,
    /// Not known yet (no attempt so far).
    Unknown,
    /// Fine.
    Ok,
}

impl Health {
    /// Lower-case word for it (`failing`, `warning`, `unknown`, `ok`).
    pub fn word(self) -> &'static str {
        match self {
            Self::Failing => "failing",
            Self::Warning => "warning",
            Self::Unknown => "unknown",
            Self::Ok => "ok",
        }
    }
}

/// One cell, typed so the host can render it (times relative to now).
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// Plain text.
    Text(String),
    /// Something that happened this long ago (`12 s ago`); `None`: never.
    Ago(Option<Duration>),
    /// Something due in this long (`in 5 min`); `None`: never; zero: now or overdue.
    In(Option<Duration>),
    /// A span (`1 h`).
    Span(Duration),
}

impl Row {
    /// A row of cells.
    pub fn new(health: Health, cells: Vec<Cell>) -> Self {
        Self { health, cells }
    }
}

impl Section {
    /// An empty section with these columns.
    pub fn new(title: &str, columns: &[&str]) -> Self {
        Self {
            title: title.to_owned(),
            columns: columns.iter().map(|c| (*c).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    /// The worst health of its rows (`Ok` when empty).
    pub fn worst(&self) -> Health {
        self.rows
            .iter()
            .map(|r| r.health)
            .min()
            .unwrap_or(Health::Ok)
    }
}

impl Status {
    /// The worst health of all rows (`Ok` when empty).
    pub fn worst(&self) -> Health {
        self.sections
            .iter()
            .map(Section::worst)
            .min()
            .unwrap_or(Health::Ok)
    }
}

/// `text` cut to at most `max` characters, with `…` where it was cut: upstream error bodies can
/// be megabytes, and logs, answers and the landing page carry them.
pub fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_owned(),
        Some((at, _)) => format!("{}…", &text[..at]),
    }
}

/// A span in words at the precision an operator reads at a glance: `45 s`, `12 min`, `3 h 20
/// min`, `4 d 6 h`.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 if d.as_millis() > 0 => format!("{} ms", d.as_millis()),
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86_400 => match (s / 3600, s % 3600 / 60) {
            (h, 0) => format!("{h} h"),
            (h, m) => format!("{h} h {m} min"),
        },
        _ => match (s / 86_400, s % 86_400 / 3600) {
            (d, 0) => format!("{d} d"),
            (d, h) => format!("{d} d {h} h"),
        },
    }
}

impl std::fmt::Display for Cell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Text(t) => f.write_str(t),
            Self::Ago(None) | Self::In(None) => f.write_str("never"),
            Self::Ago(Some(d)) if d.as_secs() == 0 => f.write_str("just now"),
            Self::Ago(Some(d)) => write!(f, "{} ago", human(*d)),
            Self::In(Some(d)) if d.as_secs() == 0 => f.write_str("now"),
            Self::In(Some(d)) => write!(f, "in {}", human(*d)),
            Self::Span(d) => f.write_str(&human(*d)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_times_read_at_a_glance() {
        let s = Duration::from_secs;
        let cases = [
            (Cell::Ago(Some(s(12))), "12 s ago"),
            (Cell::Ago(Some(Duration::from_millis(300))), "just now"),
            (Cell::Ago(Some(s(59 * 60 + 59))), "59 min ago"),
            (Cell::Ago(Some(s(3 * 3600 + 20 * 60 + 5))), "3 h 20 min ago"),
            (Cell::Ago(Some(s(2 * 86_400))), "2 d ago"),
            (Cell::Ago(Some(s(4 * 86_400 + 6 * 3600 + 1))), "4 d 6 h ago"),
            (Cell::Ago(None), "never"),
            (Cell::In(Some(s(300))), "in 5 min"),
            (Cell::In(Some(s(0))), "now"),
            (Cell::In(None), "never"),
            (Cell::Span(s(3600)), "1 h"),
            (Cell::Span(Duration::from_millis(250)), "250 ms"),
        ];
        for (cell, want) in cases {
            assert_eq!(cell.to_string(), want, "{cell:?}");
        }
    }

    #[test]
    fn clip_cuts_at_characters() {
        assert_eq!(clip("abc", 3), "abc");
        assert_eq!(clip("ééééé", 2), "éé…");
    }

    #[test]
    fn worst_health_comes_first() {
        let mut s = Section::new("Boards", &["board"]);
        assert_eq!(s.worst(), Health::Ok);
        s.rows.push(Row::new(Health::Ok, vec![]));
        s.rows.push(Row::new(Health::Warning, vec![]));
        assert_eq!(s.worst(), Health::Warning);
        s.rows.push(Row::new(Health::Failing, vec![]));
        assert_eq!(Status { sections: vec![s] }.worst(), Health::Failing);
    }
}
