//! A plain table that fits [`WIDTH`](super::style::WIDTH) columns: fixed columns keep their
//! width, flexible ones give up room (widest first) and cut their cells with an ellipsis.

use super::style::{Paint, Style, WIDTH, fit, width};

pub(super) struct Column {
    pub header: &'static str,
    /// Whether the column shrinks to make the table fit.
    pub flexible: bool,
    /// Numbers are aligned right.
    pub right: bool,
}

/// A cell: its text (already printable) and its color.
pub(super) struct Cell {
    pub text: String,
    pub paint: Option<Paint>,
}

impl From<String> for Cell {
    fn from(text: String) -> Self {
        Cell { text, paint: None }
    }
}

/// The narrowest a flexible column gets.
const MIN_FLEXIBLE: usize = 6;

/// The table's lines, header first, each at most [`WIDTH`] columns.
pub(super) fn render(columns: &[Column], rows: &[Vec<Cell>], style: &Style) -> Vec<String> {
    let mut widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, column)| {
            rows.iter()
                .map(|row| width(&row[i].text))
                .chain([width(column.header)])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let total = |widths: &[usize]| widths.iter().sum::<usize>() + widths.len().saturating_sub(1);
    while total(&widths) > WIDTH {
        let widest = columns
            .iter()
            .enumerate()
            .filter(|(i, column)| column.flexible && widths[*i] > MIN_FLEXIBLE)
            .max_by_key(|(i, _)| widths[*i])
            .map(|(i, _)| i);
        match widest {
            Some(i) => widths[i] -= 1,
            None => break,
        }
    }
    let line = |cells: Vec<(String, Option<Paint>)>| {
        let mut out = String::new();
        for (i, ((text, paint), column)) in cells.into_iter().zip(columns).enumerate() {
            if i > 0 {
                out.push(' ');
            }
            let last = i + 1 == columns.len();
            let cell = if column.right {
                let cut = super::style::truncate(&text, widths[i]);
                format!("{}{cut}", " ".repeat(widths[i].saturating_sub(width(&cut))))
            } else if last {
                // No trailing blanks.
                super::style::truncate(&text, widths[i])
            } else {
                fit(&text, widths[i])
            };
            match paint {
                Some(paint) => out.push_str(&style.paint(paint, &cell)),
                None => out.push_str(&cell),
            }
        }
        out
    };
    let mut lines = vec![line(
        columns
            .iter()
            .map(|column| (column.header.to_owned(), Some(Paint::Bold)))
            .collect(),
    )];
    for row in rows {
        lines.push(line(
            row.iter()
                .map(|cell| (cell.text.clone(), cell.paint))
                .collect(),
        ));
    }
    lines
}
