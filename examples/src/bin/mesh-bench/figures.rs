//! The figures: names, units, targets, medians, and how they are printed.

use std::fmt::Write as _;
use std::str::FromStr;

/// Every figure mesh-bench reports, in the order it measures them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Name {
    ApiCalls,
    ApiHotCalls,
    ApiSequentialP50Us,
    Activations,
    MemoryPerActivationBytes,
    HttpCall,
    HttpCallP50Us,
    HttpForwarded,
    HttpForwardedP50Us,
}

pub const ALL: [Name; 9] = [
    Name::ApiCalls,
    Name::ApiHotCalls,
    Name::ApiSequentialP50Us,
    Name::Activations,
    Name::MemoryPerActivationBytes,
    Name::HttpCall,
    Name::HttpCallP50Us,
    Name::HttpForwarded,
    Name::HttpForwardedP50Us,
];

/// A target of the Locality issue; a benchmark figure, never a test assertion.
#[derive(Debug, Clone, Copy)]
enum Target {
    AtLeast(f64),
    AtMost(f64),
    RatioAtLeast(f64),
    RatioAtMost(f64),
    /// mesh - floor at most this (a latency's overhead).
    AddedAtMost(f64),
}

impl Name {
    pub fn as_str(self) -> &'static str {
        match self {
            Name::ApiCalls => "api_calls",
            Name::ApiHotCalls => "api_hot_calls",
            Name::ApiSequentialP50Us => "api_sequential_p50_us",
            Name::Activations => "activations",
            Name::MemoryPerActivationBytes => "memory_per_activation_bytes",
            Name::HttpCall => "http_call",
            Name::HttpCallP50Us => "http_call_p50_us",
            Name::HttpForwarded => "http_forwarded",
            Name::HttpForwardedP50Us => "http_forwarded_p50_us",
        }
    }

    pub fn unit(self) -> &'static str {
        match self {
            Name::ApiCalls | Name::ApiHotCalls => "calls/s",
            Name::ApiSequentialP50Us | Name::HttpCallP50Us | Name::HttpForwardedP50Us => "us",
            Name::Activations => "activations/s",
            Name::MemoryPerActivationBytes => "bytes",
            Name::HttpCall | Name::HttpForwarded => "requests/s",
        }
    }

    /// Whether a larger figure is better.
    fn higher_is_better(self) -> bool {
        !matches!(
            self,
            Name::ApiSequentialP50Us
                | Name::HttpCallP50Us
                | Name::HttpForwardedP50Us
                | Name::MemoryPerActivationBytes
        )
    }

    /// What the floor is, in a few words (the table's legend).
    pub fn floor(self) -> &'static str {
        match self {
            Name::ApiCalls | Name::ApiHotCalls | Name::ApiSequentialP50Us => {
                "actix Addr::send, same thread layout"
            }
            Name::Activations => "actix actor start + first message",
            Name::MemoryPerActivationBytes => "bare actix actor, same mailbox",
            Name::HttpCall | Name::HttpCallP50Us => "bare actix-web endpoint",
            Name::HttpForwarded | Name::HttpForwardedP50Us => "the owner called directly",
        }
    }

    fn targets(self) -> &'static [Target] {
        match self {
            Name::ApiCalls => &[Target::AtLeast(1_000_000.0), Target::RatioAtLeast(0.5)],
            Name::ApiHotCalls => &[],
            Name::ApiSequentialP50Us => &[Target::AtMost(5.0)],
            Name::Activations => &[Target::AtLeast(400_000.0)],
            Name::MemoryPerActivationBytes => &[Target::AtMost(1_200.0)],
            Name::HttpCall => &[Target::RatioAtLeast(0.85)],
            Name::HttpCallP50Us => &[Target::RatioAtMost(1.2)],
            Name::HttpForwarded => &[Target::RatioAtLeast(0.6)],
            Name::HttpForwardedP50Us => &[Target::AddedAtMost(100.0)],
        }
    }
}

impl FromStr for Name {
    type Err = String;

    fn from_str(s: &str) -> Result<Name, String> {
        ALL.into_iter().find(|n| n.as_str() == s).ok_or_else(|| {
            let names: Vec<&str> = ALL.iter().map(|n| n.as_str()).collect();
            format!(
                "unknown figure `{s}` (expected one of {})",
                names.join(", ")
            )
        })
    }
}

/// One figure: every repetition of mesh and of its floor.
#[derive(Debug, Clone)]
pub struct Figure {
    pub name: Name,
    pub mesh: Vec<f64>,
    pub floor: Vec<f64>,
}

pub fn median(runs: &[f64]) -> f64 {
    let mut sorted = runs.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

impl Figure {
    pub fn mesh(&self) -> f64 {
        median(&self.mesh)
    }

    pub fn floor(&self) -> f64 {
        median(&self.floor)
    }

    pub fn ratio(&self) -> f64 {
        self.mesh() / self.floor()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name.as_str(),
            "unit": self.name.unit(),
            "mesh": self.mesh(),
            "floor": self.floor(),
            "ratio": self.ratio(),
        })
    }

    /// "met", "not met" or "-" (no target).
    fn verdict(&self) -> String {
        let targets = self.name.targets();
        if targets.is_empty() {
            return "-".to_owned();
        }
        let (mesh, ratio) = (self.mesh(), self.ratio());
        let mut text = Vec::new();
        for target in targets {
            let (met, what) = match *target {
                Target::AtLeast(v) => (mesh >= v, format!(">= {}", number(v))),
                Target::AtMost(v) => (mesh <= v, format!("<= {}", number(v))),
                Target::RatioAtLeast(v) => (ratio >= v, format!(">= {v}x floor")),
                Target::RatioAtMost(v) => (ratio <= v, format!("<= {v}x floor")),
                Target::AddedAtMost(v) => (
                    mesh - self.floor() <= v,
                    format!("<= floor + {}", number(v)),
                ),
            };
            text.push(format!("{what}: {}", if met { "met" } else { "NOT met" }));
        }
        text.join("; ")
    }

    pub fn progress_line(&self) -> String {
        format!(
            "  {:<28} mesh {:>12} floor {:>12} ratio {:.2}   (mesh runs {}; floor runs {})",
            self.name.as_str(),
            number(self.mesh()),
            number(self.floor()),
            self.ratio(),
            runs(&self.mesh),
            runs(&self.floor),
        )
    }
}

/// A figure for a person: thousands separated, decimals only for small numbers.
pub fn number(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    if v.abs() < 100.0 {
        return format!("{v:.1}");
    }
    let digits = format!("{:.0}", v.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0.0 {
        out.insert(0, '-');
    }
    out
}

fn runs(values: &[f64]) -> String {
    values
        .iter()
        .map(|v| number(*v))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The Markdown table of a run.
pub fn table(figures: &[Figure]) -> String {
    let mut out = String::new();
    out.push_str(
        "| figure | unit | mesh (median) | floor (median) | mesh/floor | floor is | target |\n",
    );
    out.push_str("| --- | --- | ---: | ---: | ---: | --- | --- |\n");
    for f in figures {
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} | {:.2} | {} | {} |",
            f.name.as_str(),
            f.name.unit(),
            number(f.mesh()),
            number(f.floor()),
            f.ratio(),
            f.name.floor(),
            f.verdict(),
        );
    }
    out.push_str("\nEvery repetition (mesh | floor):\n\n");
    for f in figures {
        let better = if f.name.higher_is_better() {
            "higher is better"
        } else {
            "lower is better"
        };
        let _ = writeln!(
            out,
            "- `{}` ({better}): {} | {}",
            f.name.as_str(),
            runs(&f.mesh),
            runs(&f.floor)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_numbers() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(number(1_234_567.0), "1,234,567");
        assert_eq!(number(999.4), "999");
        assert_eq!(number(4.25), "4.2");
        for name in ALL {
            assert_eq!(name.as_str().parse::<Name>(), Ok(name));
        }
    }
}
