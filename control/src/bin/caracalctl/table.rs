//! Plain-text tables with aligned columns, in the manner of VPP's `show`
//! commands: a header line, then one block of lines per row. A cell may
//! hold several lines (an interface's addresses, a route's ECMP paths); a
//! row is as tall as its tallest cell.

use std::fmt;

/// Which side of its column a cell's text hugs. Numbers go right.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// The lines of one cell.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cell(Vec<String>);

impl From<String> for Cell {
    fn from(line: String) -> Self {
        Cell(vec![line])
    }
}

impl From<&str> for Cell {
    fn from(line: &str) -> Self {
        Cell(vec![line.to_owned()])
    }
}

impl From<Vec<String>> for Cell {
    fn from(lines: Vec<String>) -> Self {
        Cell(lines)
    }
}

#[derive(Debug, Clone)]
pub struct Table {
    columns: Vec<(&'static str, Align)>,
    rows: Vec<Vec<Cell>>,
}

/// Spaces between two columns.
const GAP: usize = 2;

impl Table {
    pub fn new(columns: &[(&'static str, Align)]) -> Self {
        Table {
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Appends a row; missing trailing cells are empty.
    pub fn row(&mut self, cells: Vec<Cell>) {
        debug_assert!(cells.len() <= self.columns.len(), "more cells than columns");
        self.rows.push(cells);
    }

    fn widths(&self) -> Vec<usize> {
        let mut widths: Vec<usize> = self
            .columns
            .iter()
            .map(|(h, _)| h.chars().count())
            .collect();
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                for line in &cell.0 {
                    *width = (*width).max(line.chars().count());
                }
            }
        }
        widths
    }

    fn write_line<'a>(
        &self,
        f: &mut fmt::Formatter<'_>,
        widths: &[usize],
        texts: impl Iterator<Item = &'a str>,
    ) -> fmt::Result {
        let mut line = String::new();
        for (((_, align), width), text) in self.columns.iter().zip(widths).zip(texts) {
            if !line.is_empty() {
                line.extend(std::iter::repeat_n(' ', GAP));
            }
            let pad = width - text.chars().count();
            match align {
                Align::Left => {
                    line.push_str(text);
                    line.extend(std::iter::repeat_n(' ', pad));
                }
                Align::Right => {
                    line.extend(std::iter::repeat_n(' ', pad));
                    line.push_str(text);
                }
            }
        }
        writeln!(f, "{}", line.trim_end())
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let widths = self.widths();
        self.write_line(f, &widths, self.columns.iter().map(|(h, _)| *h))?;
        for row in &self.rows {
            let height = row.iter().map(|c| c.0.len()).max().unwrap_or(0).max(1);
            for i in 0..height {
                let texts = (0..self.columns.len()).map(|c| {
                    row.get(c)
                        .and_then(|cell| cell.0.get(i))
                        .map_or("", String::as_str)
                });
                self.write_line(f, &widths, texts)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_columns_and_trims_trailing_space() {
        let mut t = Table::new(&[
            ("Name", Align::Left),
            ("Count", Align::Right),
            ("Note", Align::Left),
        ]);
        t.row(vec!["a".into(), "7".into(), "".into()]);
        t.row(vec!["longer-name".into(), "12345678".into(), "x".into()]);
        assert_eq!(
            t.to_string(),
            "Name            Count  Note\n\
             a                   7\n\
             longer-name  12345678  x\n"
        );
    }

    #[test]
    fn multi_line_cells_make_tall_rows() {
        let mut t = Table::new(&[
            ("Prefix", Align::Left),
            ("Via", Align::Left),
            ("N", Align::Right),
        ]);
        t.row(vec![
            "10.0.0.0/8".into(),
            vec!["a".to_owned(), "bb".to_owned()].into(),
            vec!["1".to_owned(), "22".to_owned()].into(),
        ]);
        t.row(vec!["::/0".into()]);
        assert_eq!(
            t.to_string(),
            "Prefix      Via   N\n\
             10.0.0.0/8  a     1\n\
             \x20           bb   22\n\
             ::/0\n"
        );
    }

    #[test]
    fn an_empty_table_is_its_header() {
        let t = Table::new(&[("A", Align::Left), ("B", Align::Right)]);
        assert_eq!(t.to_string(), "A  B\n");
    }
}
