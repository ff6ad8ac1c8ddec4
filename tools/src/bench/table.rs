//! Plain-text tables: cells separated by whitespace, `|` between groups,
//! so that scripts can split rows.

/// Lays out `rows` (the first is the header) in aligned columns: the
/// columns in `left` are left-aligned, the others right-aligned; every
/// line is indented by two spaces.
pub fn grid(rows: &[Vec<String>], left: &[usize]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0; cols];
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in rows {
        let mut line = String::from(" ");
        for (i, (c, w)) in r.iter().zip(&widths).enumerate() {
            line.push(' ');
            if left.contains(&i) {
                line.push_str(&format!("{c:<w$}"));
            } else {
                line.push_str(&format!("{c:>w$}"));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Cells from string slices.
pub fn cells(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// An optional figure, `-` when missing.
pub fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_and_split_on_whitespace() {
        let rows = vec![cells(&["run", "p50", "|", "max"]), cells(&["mainline + locks", "3429", "|", "29432"])];
        let text = grid(&rows, &[0]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "  run               p50 |   max");
        assert_eq!(lines[1], "  mainline + locks 3429 | 29432");
        assert_eq!(opt(None::<u32>), "-");
        assert_eq!(opt(Some(3)), "3");
    }
}
