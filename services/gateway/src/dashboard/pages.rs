//! The dashboard's pages, from the summary API's answers.

use bus::wire::{ListFilter, SummaryKind, SummaryQuery, SummaryReply};
use serde_json::Value;

use super::html::{escape, figure, number, segment, Cell, Chart, Table};
use super::text::Lang;
use super::{Asked, Block, Page};
use crate::error::ApiError;
use crate::AppState;

const GROUPS: [&str; 4] = ["youth", "worker", "jobseeker", "unknown"];

async fn one(state: &AppState, kind: SummaryKind, id: &str) -> Result<Option<Value>, ApiError> {
    let query = SummaryQuery::One {
        kind,
        id: id.to_owned(),
        from: None,
        to: None,
    };
    match crate::summaries::ask(state, &query).await? {
        SummaryReply::One { summary } => Ok(summary.map(|mut summary| {
            state.programme.skill_labels.apply(&mut summary);
            summary
        })),
        _ => Err(ApiError::Internal),
    }
}

async fn list(
    state: &AppState,
    kind: SummaryKind,
    sort: &str,
    limit: usize,
    filter: ListFilter,
) -> Result<(usize, Vec<Value>), ApiError> {
    let query = SummaryQuery::List {
        kind,
        sort: Some(sort.to_owned()),
        descending: true,
        offset: 0,
        limit,
        filter,
        cursor: None,
    };
    match crate::summaries::ask(state, &query).await? {
        SummaryReply::List { total, items, .. } => Ok((total, items)),
        _ => Err(ApiError::Internal),
    }
}

/// A skill's name in the page's language, else in English, else any, else its URI.
fn skill_name(entry: &Value, lang: Lang) -> String {
    let label = entry.get("label");
    label
        .and_then(|label| label.get(lang.code()))
        .or_else(|| label.and_then(|label| label.get("en")))
        .or_else(|| {
            label
                .and_then(Value::as_object)
                .and_then(|names| names.values().next())
        })
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| entry["skill"].as_str().unwrap_or_default().to_owned())
}

fn text_of(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn hours(seconds: &Value) -> f64 {
    (seconds.as_f64().unwrap_or(0.0) / 360.0).round() / 10.0
}

fn months_of(rows: &[Value]) -> Vec<String> {
    rows.iter().map(|row| text_of(&row["month"])).collect()
}

fn values(rows: &[Value], field: &str) -> Vec<f64> {
    rows.iter()
        .map(|row| row[field].as_f64().unwrap_or(0.0))
        .collect()
}

fn kind_name(lang: Lang, kind: &str) -> String {
    match kind {
        "technohub" => lang.t("technohub").to_owned(),
        "fieldlab" => lang.t("fieldlab").to_owned(),
        "unregistered" => lang.t("unregistered").to_owned(),
        other => other.to_owned(),
    }
}

fn group_name(lang: Lang, group: &str) -> &'static str {
    match group {
        "youth" => lang.t("youth"),
        "worker" => lang.t("worker"),
        "jobseeker" => lang.t("jobseeker"),
        _ => lang.t("unknown"),
    }
}

fn hub_link(asked: &Asked, hub: &str, text: &str) -> Cell {
    Cell::Link {
        text: text.to_owned(),
        href: asked.link(&format!("/dashboard/hubs/{}", segment(hub))),
    }
}

fn company_link(asked: &Asked, company: &str) -> Cell {
    Cell::Link {
        text: company.to_owned(),
        href: asked.link(&format!("/dashboard/companies/{}", segment(company))),
    }
}

fn worker_link(asked: &Asked, worker: &str) -> Cell {
    Cell::Link {
        text: worker.to_owned(),
        href: asked.link(&format!("/dashboard/workers?id={}", segment(worker))),
    }
}

fn cards(cards: &[String]) -> Block {
    Block::Html(format!(
        "<section class=\"cards\">{}</section>",
        cards.concat()
    ))
}

fn heading(text: &str) -> Block {
    Block::Html(format!("<h2>{}</h2>", escape(text)))
}

fn skills_table(id: &'static str, caption: &str, skills: &Value, lang: Lang) -> Table {
    let mut table = Table::new(id, caption, &[lang.t("skill"), "URI", lang.t("workers")]);
    for entry in skills.as_array().into_iter().flatten() {
        table.rows.push(vec![
            Cell::text(skill_name(entry, lang)),
            Cell::text(text_of(&entry["skill"])),
            Cell::number(&entry["workers"]),
        ]);
    }
    table
}

/// Workers per learner group, from a `{group: workers}` object.
fn groups_table(groups: &Value, lang: Lang) -> Table {
    let mut table = Table::new(
        "groups",
        lang.t("learner_groups"),
        &[lang.t("learner_groups"), lang.t("workers")],
    );
    for group in GROUPS {
        table.rows.push(vec![
            Cell::text(group_name(lang, group)),
            Cell::number(&groups[group]),
        ]);
    }
    table
}

/// Monthly attendance and active workers as a chart over its table (`months` rows with
/// `attendance` and `workers`); `more` adds columns to the table: (label key, field).
fn attendance_chart(months: &[Value], lang: Lang, more: &[(&'static str, &str)]) -> Block {
    let mut headers = vec![
        lang.t("month"),
        lang.t("attendance"),
        lang.t("active_workers"),
    ];
    headers.extend(more.iter().map(|(label, _)| lang.t(label)));
    let mut table = Table::new("months", lang.t("monthly"), &headers);
    for row in months {
        let mut cells = vec![
            Cell::text(text_of(&row["month"])),
            Cell::number(&row["attendance"]),
            Cell::number(&row["workers"]),
        ];
        cells.extend(more.iter().map(|(_, field)| Cell::number(&row[*field])));
        table.rows.push(cells);
    }
    Block::Chart(
        Chart {
            id: "chart-months",
            title: lang.t("monthly").to_owned(),
            months: months_of(months),
            lines: vec![
                (
                    lang.t("attendance").to_owned(),
                    values(months, "attendance"),
                ),
                (
                    lang.t("active_workers").to_owned(),
                    values(months, "workers"),
                ),
            ],
            goal: None,
        },
        table,
    )
}

pub(crate) async fn overview(state: &AppState, asked: &Asked) -> Result<Page, ApiError> {
    let lang = asked.lang;
    let programme = crate::summaries::programme_summary(state).await?;
    let months: Vec<Value> = programme["months"].as_array().cloned().unwrap_or_default();
    let share = programme["target_share"].as_f64().unwrap_or(0.0) * 100.0;
    let reached = number(programme["companies_reached"].as_f64().unwrap_or(0.0));
    let target = number(programme["target"].as_f64().unwrap_or(0.0));
    let hubs: Vec<Value> = programme["hubs"].as_array().cloned().unwrap_or_default();
    let mut blocks = vec![cards(&[
        figure(
            "companies_reached",
            lang.t("companies_reached"),
            &reached,
            Some(&format!("{share:.1}% {} ({target})", lang.t("of_target"))),
        ),
        figure("target", lang.t("target"), &target, None),
        figure(
            "workers",
            lang.t("workers"),
            &number(programme["workers"].as_f64().unwrap_or(0.0)),
            None,
        ),
        figure(
            "statements",
            lang.t("statements"),
            &number(programme["statements"].as_f64().unwrap_or(0.0)),
            None,
        ),
        figure("hubs", lang.t("hubs"), &hubs.len().to_string(), None),
    ])];

    blocks.push(attendance_chart(
        &months,
        lang,
        &[
            ("companies_active", "companies"),
            ("statements", "statements"),
        ],
    ));

    let mut reach = Table::new(
        "reach",
        lang.t("reach"),
        &[
            lang.t("month"),
            lang.t("companies_new"),
            lang.t("companies_reached"),
        ],
    );
    for row in &months {
        reach.rows.push(vec![
            Cell::text(text_of(&row["month"])),
            Cell::number(&row["companies_new"]),
            Cell::number(&row["companies_reached"]),
        ]);
    }
    let mut reach_lines = vec![(
        lang.t("companies_reached").to_owned(),
        values(&months, "companies_reached"),
    )];
    for kind in programme["by_type"].as_array().into_iter().flatten() {
        let kind_months: Vec<Value> = kind["months"].as_array().cloned().unwrap_or_default();
        reach_lines.push((
            kind_name(lang, kind["type"].as_str().unwrap_or_default()),
            values(&kind_months, "companies_reached"),
        ));
    }
    blocks.push(Block::Chart(
        Chart {
            id: "chart-reach",
            title: lang.t("reach").to_owned(),
            months: months_of(&months),
            lines: reach_lines,
            goal: Some((
                lang.t("target").to_owned(),
                programme["target"].as_f64().unwrap_or(0.0),
            )),
        },
        reach,
    ));

    let mut types = Table::new(
        "types",
        lang.t("by_type"),
        &[
            lang.t("type"),
            lang.t("hubs"),
            lang.t("companies_reached"),
            lang.t("share"),
        ],
    );
    let target_value = programme["target"].as_f64().unwrap_or(0.0);
    for kind in programme["by_type"].as_array().into_iter().flatten() {
        let reached = kind["companies_reached"].as_f64().unwrap_or(0.0);
        types.rows.push(vec![
            Cell::text(kind_name(lang, kind["type"].as_str().unwrap_or_default())),
            Cell::number(&kind["hubs"]),
            Cell::number(&kind["companies_reached"]),
            Cell::text(if target_value > 0.0 {
                format!("{:.1}%", reached / target_value * 100.0)
            } else {
                String::new()
            }),
        ]);
    }
    blocks.push(heading(lang.t("by_type")));
    blocks.push(Block::Table(types));

    blocks.push(heading(lang.t("learner_groups")));
    blocks.push(Block::Table(groups_table(
        &programme["learner_groups"],
        lang,
    )));

    let mut headers = vec![
        lang.t("region"),
        lang.t("hubs"),
        lang.t("companies_reached"),
        lang.t("workers"),
    ];
    headers.extend(GROUPS.map(|group| group_name(lang, group)));
    let mut regions = Table::new("regions", lang.t("regions"), &headers);
    for region in programme["by_region"].as_array().into_iter().flatten() {
        let mut row = vec![
            Cell::text(kind_name(
                lang,
                region["region"].as_str().unwrap_or_default(),
            )),
            Cell::number(&region["hubs"]),
            Cell::number(&region["companies_reached"]),
            Cell::number(&region["workers"]),
        ];
        row.extend(GROUPS.map(|group| Cell::number(&region["learner_groups"][group])));
        regions.rows.push(row);
    }
    blocks.push(heading(lang.t("regions")));
    blocks.push(Block::Table(regions));

    let mut ranked = hubs.clone();
    ranked.sort_by(|a, b| {
        b["workers"]
            .as_u64()
            .cmp(&a["workers"].as_u64())
            .then_with(|| text_of(&a["hub"]).cmp(&text_of(&b["hub"])))
    });
    let mut headers = vec![
        lang.t("hub"),
        lang.t("name"),
        lang.t("type"),
        lang.t("region"),
        lang.t("workers"),
        lang.t("companies"),
    ];
    headers.extend(GROUPS.map(|group| group_name(lang, group)));
    let mut hub_table = Table::new("hubs", lang.t("hubs_ranked"), &headers);
    for hub in &ranked {
        let id = text_of(&hub["hub"]);
        let mut row = vec![
            hub_link(asked, &id, &id),
            Cell::text(text_of(&hub["name"])),
            Cell::text(kind_name(lang, hub["type"].as_str().unwrap_or_default())),
            Cell::text(kind_name(lang, hub["region"].as_str().unwrap_or_default())),
            Cell::number(&hub["workers"]),
            Cell::number(&hub["companies"]),
        ];
        row.extend(GROUPS.map(|group| Cell::number(&hub["learner_groups"][group])));
        hub_table.rows.push(row);
    }
    blocks.push(heading(lang.t("hubs_ranked")));
    blocks.push(Block::Table(hub_table));
    blocks.push(Block::Html(format!(
        "<p class=\"note\">{} {}</p>",
        escape(lang.t("as_of")),
        programme["applied_sequence"]
    )));
    Ok(Page {
        title: lang.t("title").to_owned(),
        blocks,
    })
}

pub(crate) async fn hub(state: &AppState, asked: &Asked, id: &str) -> Result<Page, ApiError> {
    let lang = asked.lang;
    let summary = one(state, SummaryKind::Hub, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no hub {id:?} has statements")))?;
    let registry = crate::hubs::registry(state).await?;
    let entry = registry.iter().find(|hub| hub.id == id);
    let title = match entry {
        Some(entry) => format!("{} ({id})", entry.name),
        None => format!("{} {id}", lang.t("hub")),
    };
    let mut blocks = vec![
        Block::Html(format!(
            "<p class=\"lead\">{}: {} · {}: {}</p>",
            escape(lang.t("type")),
            escape(&kind_name(
                lang,
                entry.map_or("unregistered", |entry| entry.kind.as_str())
            )),
            escape(lang.t("region")),
            escape(&entry.map_or_else(
                || lang.t("unregistered").to_owned(),
                |entry| entry.region.clone()
            )),
        )),
        cards(&[
            figure(
                "workers",
                lang.t("workers"),
                &text_of(&summary["workers"]),
                None,
            ),
            figure(
                "companies",
                lang.t("companies"),
                &text_of(&summary["companies"]),
                None,
            ),
            figure(
                "attendance",
                lang.t("attendance"),
                &text_of(&summary["attendance"]),
                None,
            ),
            figure(
                "sessions",
                lang.t("sessions"),
                &text_of(&summary["sessions"]),
                None,
            ),
            figure(
                "statements",
                lang.t("statements"),
                &text_of(&summary["statements"]),
                None,
            ),
        ]),
    ];
    let months: Vec<Value> = summary["months"].as_array().cloned().unwrap_or_default();
    blocks.push(attendance_chart(&months, lang, &[]));
    blocks.push(heading(lang.t("learner_groups")));
    blocks.push(Block::Table(groups_table(&summary["learner_groups"], lang)));
    blocks.push(heading(lang.t("top_skills")));
    blocks.push(Block::Table(skills_table(
        "skills",
        lang.t("top_skills"),
        &summary["skill_workers"],
        lang,
    )));
    let (total, companies) = list(
        state,
        SummaryKind::Company,
        "workers",
        100,
        ListFilter {
            hub: Some(id.to_owned()),
            ..ListFilter::default()
        },
    )
    .await?;
    let mut table = Table::new(
        "companies",
        &format!("{} ({total})", lang.t("companies")),
        &[
            lang.t("company"),
            lang.t("workers"),
            lang.t("statements"),
            lang.t("completed_activities"),
            lang.t("skills"),
        ],
    );
    for company in &companies {
        table.rows.push(vec![
            company_link(asked, &text_of(&company["company"])),
            Cell::number(&company["workers"]),
            Cell::number(&company["statements"]),
            Cell::number(&company["completed_activities"]),
            Cell::number(&company["skills"]),
        ]);
    }
    blocks.push(heading(lang.t("companies")));
    blocks.push(Block::Table(table));
    Ok(Page { title, blocks })
}

pub(crate) async fn company(state: &AppState, asked: &Asked, id: &str) -> Result<Page, ApiError> {
    let lang = asked.lang;
    let summary = one(state, SummaryKind::Company, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no company {id:?} has statements")))?;
    let mut blocks = vec![cards(&[
        figure(
            "workers",
            lang.t("workers"),
            &text_of(&summary["workers"]),
            None,
        ),
        figure(
            "statements",
            lang.t("statements"),
            &text_of(&summary["statements"]),
            None,
        ),
        figure(
            "learning_hours",
            lang.t("learning_hours"),
            &number(hours(&summary["learning_seconds"])),
            None,
        ),
        figure(
            "completed_activities",
            lang.t("completed_activities"),
            &text_of(&summary["completed_activities"]),
            None,
        ),
        figure(
            "skills",
            lang.t("skills"),
            &text_of(&summary["skills"]),
            None,
        ),
    ])];
    // Skills over time: workers per month for the company's most held skills.
    let months: Vec<Value> = summary["months"].as_array().cloned().unwrap_or_default();
    let top: Vec<Value> = summary["skill_workers"]
        .as_array()
        .map(|skills| skills.iter().take(6).cloned().collect())
        .unwrap_or_default();
    let mut headers = vec![lang.t("month").to_owned(), lang.t("statements").to_owned()];
    headers.extend(top.iter().map(|skill| skill_name(skill, lang)));
    let header_refs: Vec<&str> = headers.iter().map(String::as_str).collect();
    let mut table = Table::new("skills-months", lang.t("skills_over_time"), &header_refs);
    let per_month = |row: &Value, skill: &Value| -> f64 {
        row["skill_workers"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|entry| entry["skill"] == skill["skill"])
            .and_then(|entry| entry["workers"].as_f64())
            .unwrap_or(0.0)
    };
    for row in &months {
        let mut cells = vec![
            Cell::text(text_of(&row["month"])),
            Cell::number(&row["statements"]),
        ];
        cells.extend(top.iter().map(|skill| Cell::Number(per_month(row, skill))));
        table.rows.push(cells);
    }
    let lines = top
        .iter()
        .map(|skill| {
            (
                skill_name(skill, lang),
                months.iter().map(|row| per_month(row, skill)).collect(),
            )
        })
        .collect();
    blocks.push(Block::Chart(
        Chart {
            id: "chart-skills",
            title: lang.t("skills_over_time").to_owned(),
            months: months_of(&months),
            lines,
            goal: None,
        },
        table,
    ));
    blocks.push(heading(lang.t("skills")));
    blocks.push(Block::Table(skills_table(
        "skills",
        lang.t("skills"),
        &summary["skill_workers"],
        lang,
    )));
    let (total, workers) = list(
        state,
        SummaryKind::Worker,
        "statements",
        100,
        ListFilter {
            company: Some(id.to_owned()),
            ..ListFilter::default()
        },
    )
    .await?;
    let mut table = Table::new(
        "workers",
        &format!("{} ({total})", lang.t("workers")),
        &[
            lang.t("worker_page"),
            lang.t("statements"),
            lang.t("learning_hours"),
            lang.t("completed_activities"),
            lang.t("last"),
        ],
    );
    for worker in &workers {
        table.rows.push(vec![
            worker_link(asked, &text_of(&worker["worker"])),
            Cell::number(&worker["statements"]),
            Cell::Number(hours(&worker["learning_seconds"])),
            Cell::number(&worker["completed_activities"]),
            Cell::text(text_of(&worker["last"])),
        ]);
    }
    blocks.push(heading(lang.t("workers")));
    blocks.push(Block::Table(table));
    Ok(Page {
        title: format!("{} {id}", lang.t("company")),
        blocks,
    })
}

pub(crate) async fn worker(state: &AppState, asked: &Asked, id: &str) -> Result<Page, ApiError> {
    let lang = asked.lang;
    let summary = one(state, SummaryKind::Worker, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no worker {id:?} has statements")))?;
    let mut blocks = vec![cards(&[
        figure(
            "statements",
            lang.t("statements"),
            &text_of(&summary["statements"]),
            None,
        ),
        figure(
            "learning_hours",
            lang.t("learning_hours"),
            &number(hours(&summary["learning_seconds"])),
            None,
        ),
        figure(
            "completed_activities",
            lang.t("completed_activities"),
            &text_of(&summary["completed_activities"]),
            None,
        ),
        figure("first", lang.t("first"), &text_of(&summary["first"]), None),
        figure("last", lang.t("last"), &text_of(&summary["last"]), None),
    ])];
    let months: Vec<Value> = summary["months"].as_array().cloned().unwrap_or_default();
    let mut table = Table::new(
        "months",
        lang.t("timeline"),
        &[
            lang.t("month"),
            lang.t("statements"),
            lang.t("learning_hours"),
        ],
    );
    for row in &months {
        table.rows.push(vec![
            Cell::text(text_of(&row["month"])),
            Cell::number(&row["statements"]),
            Cell::Number(hours(&row["learning_seconds"])),
        ]);
    }
    blocks.push(Block::Chart(
        Chart {
            id: "chart-timeline",
            title: lang.t("timeline").to_owned(),
            months: months_of(&months),
            lines: vec![
                (
                    lang.t("statements").to_owned(),
                    values(&months, "statements"),
                ),
                (
                    lang.t("learning_hours").to_owned(),
                    months
                        .iter()
                        .map(|row| hours(&row["learning_seconds"]))
                        .collect(),
                ),
            ],
            goal: None,
        },
        table,
    ));
    let mut hubs = Table::new("hubs", lang.t("hubs"), &[lang.t("hub")]);
    for hub in summary["hubs"].as_array().into_iter().flatten() {
        let hub = text_of(hub);
        hubs.rows.push(vec![hub_link(asked, &hub, &hub)]);
    }
    blocks.push(heading(lang.t("hubs")));
    blocks.push(Block::Table(hubs));
    let mut skills = Table::new(
        "skills",
        lang.t("skills"),
        &[lang.t("skill"), "URI", lang.t("first_evidenced")],
    );
    for skill in summary["skills_first"].as_array().into_iter().flatten() {
        skills.rows.push(vec![
            Cell::text(skill_name(skill, lang)),
            Cell::text(text_of(&skill["skill"])),
            Cell::text(text_of(&skill["first"])),
        ]);
    }
    blocks.push(heading(lang.t("skills")));
    blocks.push(Block::Table(skills));
    Ok(Page {
        title: format!("{} {id}", lang.t("worker_page")),
        blocks,
    })
}

/// Where a search leads: a hub, a company or a worker with that identifier (a worker also by
/// e-mail address); else a page that says nothing was found, with the hubs whose id or name
/// contains it.
pub(crate) async fn find(
    state: &AppState,
    asked: &Asked,
    wanted: &str,
) -> Result<Result<String, Page>, ApiError> {
    let lang = asked.lang;
    if !wanted.is_empty() {
        if one(state, SummaryKind::Hub, wanted).await?.is_some() {
            return Ok(Ok(
                asked.link(&format!("/dashboard/hubs/{}", segment(wanted)))
            ));
        }
        if one(state, SummaryKind::Company, wanted).await?.is_some() {
            return Ok(Ok(
                asked.link(&format!("/dashboard/companies/{}", segment(wanted)))
            ));
        }
        let mut candidates = vec![wanted.to_owned()];
        let address = wanted.strip_prefix("mailto:").unwrap_or(wanted);
        if address.contains('@') {
            candidates.push(format!("mbox:mailto:{}", address.to_lowercase()));
        }
        for key in candidates {
            if one(state, SummaryKind::Worker, &key).await?.is_some() {
                return Ok(Ok(
                    asked.link(&format!("/dashboard/workers?id={}", segment(&key)))
                ));
            }
        }
    }
    let needle = wanted.to_lowercase();
    let registry = crate::hubs::registry(state).await?;
    let mut table = Table::new("matches", lang.t("hubs"), &[lang.t("hub"), lang.t("name")]);
    for hub in registry.iter().filter(|hub| {
        !needle.is_empty()
            && (hub.id.to_lowercase().contains(&needle)
                || hub.name.to_lowercase().contains(&needle))
    }) {
        table.rows.push(vec![
            hub_link(asked, &hub.id, &hub.id),
            Cell::text(hub.name.clone()),
        ]);
    }
    let mut blocks = vec![Block::Html(format!(
        "<p class=\"lead\" id=\"not-found\">{} <q>{}</q>.</p>",
        escape(lang.t("not_found")),
        escape(wanted)
    ))];
    if !table.rows.is_empty() {
        blocks.push(Block::Table(table));
    }
    Ok(Err(Page {
        title: lang.t("search").to_owned(),
        blocks,
    }))
}
