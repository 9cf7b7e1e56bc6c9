//! The dashboard's building blocks: escaped text, tables (that are also CSV downloads),
//! charts (each with the table of its figures) and the page around them.

use std::fmt::Write as _;

use serde_json::{json, Value};

use super::text::Lang;

/// Text for HTML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// What a path segment or query value escapes: everything but letters, digits and `-_.~`.
const ESCAPED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// A path segment or a query value.
pub fn segment(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, ESCAPED).to_string()
}

/// One table cell: what it shows, and where it leads.
#[derive(Debug, Clone)]
pub enum Cell {
    Text(String),
    Number(f64),
    Link { text: String, href: String },
}

impl Cell {
    pub fn text(text: impl Into<String>) -> Cell {
        Cell::Text(text.into())
    }

    pub fn number(value: &Value) -> Cell {
        Cell::Number(value.as_f64().unwrap_or(0.0))
    }

    fn plain(&self) -> String {
        match self {
            Cell::Text(text) | Cell::Link { text, .. } => text.clone(),
            Cell::Number(value) => number(*value),
        }
    }
}

/// A number as people read it: whole numbers without decimals, others with one.
pub fn number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{value:.1}")
    }
}

/// A table of the page; `id` names it in the page and in its CSV download (`?csv=id`).
pub struct Table {
    pub id: &'static str,
    pub caption: String,
    pub headers: Vec<String>,
    pub rows: Vec<Vec<Cell>>,
}

impl Table {
    pub fn new(id: &'static str, caption: &str, headers: &[&str]) -> Table {
        Table {
            id,
            caption: caption.to_owned(),
            headers: headers.iter().map(|header| (*header).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    /// The table as HTML, with its CSV link (`page` is the page's own URL, query included).
    pub fn html(&self, page: &str, lang: Lang) -> String {
        let mut html = format!(
            "<table id=\"{}\" class=\"figures\"><caption>{}</caption><thead><tr>",
            self.id,
            escape(&self.caption)
        );
        for header in &self.headers {
            let _ = write!(html, "<th scope=\"col\">{}</th>", escape(header));
        }
        html.push_str("</tr></thead><tbody>");
        for row in &self.rows {
            html.push_str("<tr>");
            for (index, cell) in row.iter().enumerate() {
                let (open, close) = if index == 0 {
                    ("<th scope=\"row\"", "</th>")
                } else {
                    ("<td", "</td>")
                };
                match cell {
                    Cell::Text(text) => {
                        let _ = write!(html, "{open}>{}{close}", escape(text));
                    }
                    Cell::Number(value) => {
                        let _ = write!(html, "{open} class=\"num\">{}{close}", number(*value));
                    }
                    Cell::Link { text, href } => {
                        let _ = write!(
                            html,
                            "{open}><a href=\"{}\">{}</a>{close}",
                            escape(href),
                            escape(text)
                        );
                    }
                }
            }
            html.push_str("</tr>");
        }
        let join = if page.contains('?') { '&' } else { '?' };
        let _ = write!(
            html,
            "</tbody></table><p class=\"csv\"><a class=\"csv-link\" data-table=\"{}\" href=\"{}\" download=\"{}.csv\">{}</a></p>",
            self.id,
            escape(&format!("{page}{join}csv={}", self.id)),
            self.id,
            lang.t("download_csv")
        );
        html
    }

    /// The table as CSV (the same cells as the page; formulas made inert).
    pub fn csv(&self) -> Result<Vec<u8>, csv::Error> {
        let mut writer = csv::Writer::from_writer(Vec::new());
        writer.write_record(&self.headers)?;
        for row in &self.rows {
            writer.write_record(row.iter().map(|cell| match cell {
                Cell::Number(_) => cell.plain(),
                _ => crate::summaries::inert(&cell.plain()),
            }))?;
        }
        writer
            .into_inner()
            .map_err(|err| csv::Error::from(err.into_error()))
    }
}

/// A line chart over months, drawn by uPlot from the JSON beside it; the table of its
/// figures follows it, so the chart is never the only way to read them.
pub struct Chart {
    pub id: &'static str,
    pub title: String,
    pub months: Vec<String>,
    /// Each line's name and its value per month.
    pub lines: Vec<(String, Vec<f64>)>,
    /// A constant line (a target), drawn dashed.
    pub goal: Option<(String, f64)>,
}

impl Chart {
    pub fn html(&self, table: &Table, page: &str, lang: Lang) -> String {
        let data = json!({
            "months": self.months,
            "lines": self.lines.iter().map(|(name, values)| json!({"name": name, "values": values})).collect::<Vec<_>>(),
            "goal": self.goal.as_ref().map(|(name, value)| json!({"name": name, "value": value})),
        });
        // `</` cannot end the script early: JSON escapes it.
        let data = data.to_string().replace("</", "<\\/");
        format!(
            "<figure class=\"chart\" aria-labelledby=\"{id}-title\"><figcaption id=\"{id}-title\">{title}</figcaption>\
             <div class=\"plot\" id=\"{id}\" role=\"img\" aria-label=\"{title}\" data-chart=\"{id}-data\"></div>\
             <script type=\"application/json\" id=\"{id}-data\">{data}</script>\
             <details open><summary>{caption}</summary>{table}</details></figure>",
            id = self.id,
            title = escape(&self.title),
            caption = escape(lang.t("chart_table")),
            table = table.html(page, lang),
        )
    }
}

/// A headline figure; `name` is its `data-figure` attribute (the browser test reads it).
pub fn figure(name: &str, label: &str, value: &str, detail: Option<&str>) -> String {
    format!(
        "<div class=\"card\"><div class=\"label\">{}</div><div class=\"value\" data-figure=\"{}\">{}</div>{}</div>",
        escape(label),
        escape(name),
        escape(value),
        detail
            .map(|detail| format!("<div class=\"detail\">{}</div>", escape(detail)))
            .unwrap_or_default()
    )
}

/// The page around the content: title, navigation, search, language switch.
pub fn page(lang: Lang, title: &str, path_and_query: &str, body: &str) -> String {
    let other = lang.other();
    let switch = {
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        let mut pairs: Vec<String> = query
            .split('&')
            .filter(|pair| !pair.is_empty() && !pair.starts_with("lang="))
            .map(str::to_owned)
            .collect();
        pairs.push(format!("lang={}", other.code()));
        format!("{path}?{}", pairs.join("&"))
    };
    format!(
        "<!doctype html><html lang=\"{code}\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · Leerspoor</title>\
         <link rel=\"stylesheet\" href=\"/dashboard/assets/uPlot.min.css\">\
         <link rel=\"stylesheet\" href=\"/dashboard/assets/dashboard.css\"></head><body>\
         <header><nav aria-label=\"Leerspoor\"><a class=\"brand\" href=\"/dashboard?lang={code}\">Leerspoor</a>\
         <a href=\"/dashboard?lang={code}\">{overview}</a>\
         <form role=\"search\" action=\"/dashboard/search\" method=\"get\"><input type=\"hidden\" name=\"lang\" value=\"{code}\">\
         <label for=\"q\" class=\"visually-hidden\">{search}</label>\
         <input id=\"q\" name=\"q\" type=\"search\" placeholder=\"{hint}\" title=\"{hint}\" required>\
         <button type=\"submit\">{search}</button></form>\
         <a class=\"lang\" href=\"{switch}\" hreflang=\"{other_code}\" lang=\"{other_code}\">{language}</a></nav></header>\
         <main><h1>{title}</h1>{body}</main>\
         <script src=\"/dashboard/assets/uPlot.iife.min.js\"></script>\
         <script src=\"/dashboard/assets/dashboard.js\"></script></body></html>",
        code = lang.code(),
        other_code = other.code(),
        title = escape(title),
        overview = escape(lang.t("overview")),
        search = escape(lang.t("search")),
        hint = escape(lang.t("search_hint")),
        language = escape(lang.t("language")),
        switch = escape(&switch),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_escape_what_statements_bring_and_download_the_same_cells() {
        let mut table = Table::new("hubs", "Hubs", &["Hub", "Workers"]);
        table.rows.push(vec![
            Cell::Link {
                text: "<script>".into(),
                href: "/dashboard/hubs/%3Cscript%3E".into(),
            },
            Cell::Number(12.0),
        ]);
        table.rows.push(vec![Cell::text("=cmd"), Cell::Number(1.5)]);
        let html = table.html("/dashboard?lang=en", Lang::En);
        assert!(html.contains("&lt;script&gt;"), "{html}");
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("/dashboard?lang=en&amp;csv=hubs"), "{html}");
        let csv = String::from_utf8(table.csv().expect("csv")).expect("utf-8");
        assert_eq!(csv, "Hub,Workers\n<script>,12\n'=cmd,1.5\n");
    }
}
