//! Printing: aligned tables for people, JSON for scripts.

use super::CliError;
use serde::Serialize;

/// Prints `value` as pretty JSON.
pub(crate) fn json<T: Serialize + ?Sized>(value: &T) -> Result<(), CliError> {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("serializes")
    );
    Ok(())
}

/// Prints rows under headers, columns aligned.
pub(crate) fn table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let print = |cells: Vec<&str>| {
        let line: Vec<String> = cells
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (c, w))| {
                if i + 1 == cells.len() {
                    c.to_string()
                } else {
                    format!("{c:<w$}")
                }
            })
            .collect();
        println!("{}", line.join("  ").trim_end());
    };
    print(headers.to_vec());
    for row in &rows {
        print(row.iter().map(String::as_str).collect());
    }
}

/// Cuts `s` to at most `n` characters, marking the cut.
pub(crate) fn cut(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// A measured duration for people: sub-millisecond ones keep their
/// fraction (`0.25ms`), longer ones read as `1s 500ms`.
pub(crate) fn elapsed_ms(ms: f64) -> String {
    if ms < 1.0 {
        format!("{ms:.2}ms")
    } else {
        jobvisor::model::format_ms(ms.round() as u64)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_measured_duration_keeps_its_fraction_below_a_millisecond() {
        assert_eq!(super::elapsed_ms(0.25), "0.25ms");
        assert_eq!(super::elapsed_ms(1500.0), "1s 500ms");
    }
}
