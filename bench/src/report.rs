//! Markdown tables and the number formats in them.

use std::fmt::Write as _;
use std::time::Duration;

/// A Markdown table with a title and notes under it.
#[derive(Clone, Debug)]
pub struct Table {
    title: String,
    columns: Vec<String>,
    rows: Vec<Vec<String>>,
    notes: Vec<String>,
}

impl Table {
    /// An empty table with a title and column headers.
    pub fn new(title: impl Into<String>, columns: &[&str]) -> Self {
        Self {
            title: title.into(),
            columns: columns.iter().map(|c| (*c).to_owned()).collect(),
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Appends a row (one cell per column).
    pub fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.columns.len(), "{cells:?}");
        self.rows.push(cells);
    }

    /// Appends a note printed under the table.
    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    /// The table as Markdown: a `###` title, the table, the notes as a list.
    pub fn to_markdown(&self) -> String {
        let mut out = format!("### {}\n\n", self.title);
        let line = |cells: &[String]| format!("| {} |\n", cells.join(" | "));
        out.push_str(&line(&self.columns));
        let _ = writeln!(out, "|{}", "---|".repeat(self.columns.len()));
        for row in &self.rows {
            out.push_str(&line(row));
        }
        if !self.notes.is_empty() {
            out.push('\n');
            for note in &self.notes {
                let _ = writeln!(out, "- {note}");
            }
        }
        out
    }
}

/// The median of `values` (the mean of the middle two for an even count);
/// zero for none.
pub fn median(values: &[Duration]) -> Duration {
    let mut sorted = values.to_vec();
    sorted.sort();
    match sorted.len() {
        0 => Duration::ZERO,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2,
    }
}

/// The median of byte counts (lower middle for an even count); zero for none.
pub fn median_bytes(values: &[u64]) -> u64 {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    sorted
        .get(sorted.len().saturating_sub(1) / 2)
        .copied()
        .unwrap_or(0)
}

/// A duration in seconds, e.g. `12.34 s`.
pub fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 10.0 {
        format!("{s:.2} s")
    } else {
        format!("{s:.1} s")
    }
}

/// Throughput in MB/s (10^6 bytes per second).
pub fn mb_per_s(bytes: u64, d: Duration) -> String {
    let s = d.as_secs_f64();
    if s <= 0.0 {
        return "—".into();
    }
    format!("{:.0} MB/s", bytes as f64 / 1e6 / s)
}

/// A byte count in binary units, e.g. `1.00 GiB`, `12.5 KiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    match unit {
        0 => format!("{n} B"),
        _ if value < 10.0 => format!("{value:.2} {}", UNITS[unit]),
        _ => format!("{value:.1} {}", UNITS[unit]),
    }
}

/// A ratio, e.g. `1.23x`.
pub fn ratio(r: f64) -> String {
    if !r.is_finite() {
        return "—".into();
    }
    if r >= 100.0 {
        format!("{r:.0}x")
    } else {
        format!("{r:.2}x")
    }
}

/// How long `baseline` takes relative to `case`: above 1 means `case` is faster.
pub fn speedup(baseline: Duration, case: Duration) -> f64 {
    baseline.as_secs_f64() / case.as_secs_f64()
}

/// A target's verdict cell.
pub fn verdict(met: bool) -> String {
    if met {
        "met".into()
    } else {
        "**missed**".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_formats() {
        let d = Duration::from_millis;
        assert_eq!(median(&[d(3), d(1), d(2)]), d(2));
        assert_eq!(
            median(&[d(4), d(1), d(2), d(3)]),
            Duration::from_micros(2_500)
        );
        assert_eq!(median_bytes(&[5, 1, 9, 7]), 5);
        assert_eq!(bytes(1 << 30), "1.00 GiB");
        assert_eq!(bytes(1536), "1.50 KiB");
        assert_eq!(bytes(100 << 20), "100.0 MiB");
        assert_eq!(secs(d(1234)), "1.23 s");
        assert_eq!(mb_per_s(200_000_000, Duration::from_secs(2)), "100 MB/s");
        assert_eq!(
            ratio(speedup(Duration::from_secs(10), Duration::from_secs(4))),
            "2.50x"
        );
    }

    #[test]
    fn renders_markdown() {
        let mut t = Table::new("T", &["a", "b"]);
        t.row(vec!["1".into(), "2".into()]);
        t.note("n");
        assert_eq!(
            t.to_markdown(),
            "### T\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n- n\n"
        );
    }
}
