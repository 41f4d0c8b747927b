//! Evaluation reports: one structure written three ways — `report.json` (the numbers, for scripts),
//! `report.md` (for a terminal or a README) and `report.html` (self-contained page with the image
//! grids) — every file atomically.
pub mod bench_table;
pub mod gpu;
pub mod grid;
pub mod redteam;
pub mod tables;

use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::io::atomic::{write_atomic, write_json};

/// A piece of a report section.
#[derive(Debug, Clone)]
pub enum Block {
    Paragraph(String),
    Table {
        header: Vec<String>,
        rows: Vec<Vec<String>>,
    },
    /// An image file relative to the report folder.
    Image {
        file: String,
        caption: String,
    },
    /// Images side by side: rows of (caption, files relative to the report folder), one column per
    /// entry of `columns` (an empty file name leaves the cell blank).
    Gallery {
        columns: Vec<String>,
        rows: Vec<(String, Vec<String>)>,
    },
}

#[derive(Debug, Clone)]
pub struct Section {
    pub title: String,
    pub blocks: Vec<Block>,
}

impl Section {
    pub fn new(title: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            blocks: vec![],
        }
    }

    pub fn paragraph(mut self, text: impl Into<String>) -> Self {
        self.blocks.push(Block::Paragraph(text.into()));
        self
    }

    pub fn table(mut self, header: &[&str], rows: Vec<Vec<String>>) -> Self {
        self.blocks.push(Block::Table {
            header: header.iter().map(|h| h.to_string()).collect(),
            rows,
        });
        self
    }

    pub fn image(mut self, file: impl Into<String>, caption: impl Into<String>) -> Self {
        self.blocks.push(Block::Image {
            file: file.into(),
            caption: caption.into(),
        });
        self
    }
}

/// A whole report: title, sections for md/html, and the JSON document for report.json.
#[derive(Debug, Clone)]
pub struct Report {
    pub title: String,
    pub sections: Vec<Section>,
    pub json: serde_json::Value,
}

/// A number for a table cell: 4 significant decimals, `–` for missing or NaN.
pub fn num(x: Option<f64>) -> String {
    match x {
        Some(v) if v.is_finite() => {
            if v.abs() >= 100.0 {
                format!("{v:.1}")
            } else {
                format!("{v:.4}")
            }
        }
        _ => "–".into(),
    }
}

/// A share as a percentage, e.g. `87.5%`.
pub fn pct(x: Option<f64>) -> String {
    match x {
        Some(v) if v.is_finite() => format!("{:.1}%", 100.0 * v),
        _ => "–".into(),
    }
}

fn md_cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const CSS: &str = "body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}\
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}\
th{background:#f3f3f3}img.cell{image-rendering:pixelated;width:96px;height:96px}\
figure{margin:1em 0}figcaption{color:#555;font-size:90%}img.grid{image-rendering:pixelated;max-width:100%}";

impl Report {
    pub fn to_markdown(&self) -> String {
        let mut s = format!("# {}\n", self.title);
        for sec in &self.sections {
            s += &format!("\n## {}\n", sec.title);
            for b in &sec.blocks {
                s.push('\n');
                match b {
                    Block::Paragraph(p) => s += &format!("{p}\n"),
                    Block::Table { header, rows } => {
                        let h: Vec<String> = header.iter().map(|c| md_cell(c)).collect();
                        s += &format!("| {} |\n|{}\n", h.join(" | "), "---|".repeat(h.len()));
                        for r in rows {
                            let r: Vec<String> = r.iter().map(|c| md_cell(c)).collect();
                            s += &format!("| {} |\n", r.join(" | "));
                        }
                    }
                    Block::Image { file, caption } => s += &format!("![{caption}]({file})\n"),
                    Block::Gallery { columns, rows } => {
                        s += &format!(
                            "| prompt | {} |\n|{}\n",
                            columns.join(" | "),
                            "---|".repeat(columns.len() + 1)
                        );
                        for (cap, files) in rows {
                            let cells: Vec<String> = files
                                .iter()
                                .map(|f| {
                                    if f.is_empty() {
                                        String::new()
                                    } else {
                                        format!("![]({f})")
                                    }
                                })
                                .collect();
                            s += &format!("| {} | {} |\n", md_cell(cap), cells.join(" | "));
                        }
                    }
                }
            }
        }
        s
    }

    pub fn to_html(&self) -> String {
        let mut s = format!(
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{t}</title><style>{CSS}</style></head><body>\n<h1>{t}</h1>\n",
            t = html_escape(&self.title)
        );
        for sec in &self.sections {
            s += &format!("<h2>{}</h2>\n", html_escape(&sec.title));
            for b in &sec.blocks {
                match b {
                    Block::Paragraph(p) => s += &format!("<p>{}</p>\n", html_escape(p)),
                    Block::Table { header, rows } => {
                        s += "<table><tr>";
                        for h in header {
                            s += &format!("<th>{}</th>", html_escape(h));
                        }
                        s += "</tr>\n";
                        for r in rows {
                            s += "<tr>";
                            for c in r {
                                s += &format!("<td>{}</td>", html_escape(c));
                            }
                            s += "</tr>\n";
                        }
                        s += "</table>\n";
                    }
                    Block::Image { file, caption } => {
                        s += &format!(
                            "<figure><img class=\"grid\" src=\"{}\" alt=\"{c}\"><figcaption>{c}</figcaption></figure>\n",
                            html_escape(file),
                            c = html_escape(caption)
                        )
                    }
                    Block::Gallery { columns, rows } => {
                        s += "<table><tr><th>prompt</th>";
                        for c in columns {
                            s += &format!("<th>{}</th>", html_escape(c));
                        }
                        s += "</tr>\n";
                        for (cap, files) in rows {
                            s += &format!("<tr><td>{}</td>", html_escape(cap));
                            for f in files {
                                if f.is_empty() {
                                    s += "<td></td>";
                                } else {
                                    s += &format!("<td><img class=\"cell\" src=\"{}\" alt=\"\"></td>", html_escape(f));
                                }
                            }
                            s += "</tr>\n";
                        }
                        s += "</table>\n";
                    }
                }
            }
        }
        // For headless checks (scripts/check_report_page.sh): after loading, the body records how
        // many images the page has and how many failed to load.
        s + "<script>window.addEventListener('load',function(){var i=Array.prototype.slice.call(document.images);document.body.dataset.images=i.length;document.body.dataset.imagesBroken=i.filter(function(m){return !(m.complete&&m.naturalWidth>0);}).length;});</script>\n</body></html>\n"
    }

    /// Write `report.json`, `report.md`, `report.html` into `dir`; returns their paths.
    pub fn write(&self, dir: &Path) -> Result<[PathBuf; 3]> {
        let paths = [
            dir.join("report.json"),
            dir.join("report.md"),
            dir.join("report.html"),
        ];
        write_json(&paths[0], &self.json)?;
        write_atomic(&paths[1], self.to_markdown().as_bytes())?;
        write_atomic(&paths[2], self.to_html().as_bytes())?;
        Ok(paths)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_and_html_carry_tables_and_escape_text() {
        let r = Report {
            title: "t <1>".into(),
            sections: vec![Section::new("s")
                .paragraph("a & b")
                .table(&["k", "v"], vec![vec!["x|y".into(), num(Some(0.5))]])],
            json: serde_json::json!({}),
        };
        let md = r.to_markdown();
        assert!(md.contains("| x\\|y | 0.5000 |"), "{md}");
        let html = r.to_html();
        assert!(
            html.contains("<title>t &lt;1&gt;</title>") && html.contains("a &amp; b"),
            "{html}"
        );
        assert_eq!(pct(Some(0.875)), "87.5%");
        assert_eq!(num(Some(f64::NAN)), "–");
    }
}
