//! The dashboard in a real browser: Debian's chromium driven through chromium-driver
//! (WebDriver, the `fantoccini` crate), both installed by `deploy/test.sh`. Demo data goes in,
//! every page is opened, the figures shown are compared with the summary API's, the test
//! clicks through hub → company → worker, downloads a table as CSV, searches, and switches
//! to Dutch. A screenshot of each page is kept in `target/dashboard-screenshots/` (and in
//! `$LEERSPOOR_SCREENSHOTS_TO` when set: how `docs/` gets its pictures).

use std::path::PathBuf;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use testkit::wait_until;

use crate::helpers::{TestApp, KEY, SECRET, WAIT};

fn chromedriver_path() -> PathBuf {
    let found = std::env::var_os("LEERSPOOR_CHROMEDRIVER")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|dir| dir.join("chromedriver"))
                    .find(|path| path.is_file())
            })
        });
    match found {
        Some(path) if path.is_file() => path,
        _ => panic!(
            "no chromedriver: run deploy/test.sh, which installs Debian's chromium and chromium-driver"
        ),
    }
}

/// chromedriver on a free port, ended when dropped.
struct Driver {
    child: tokio::process::Child,
    url: String,
}

impl Driver {
    async fn start() -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("free port")
            .port();
        let child = tokio::process::Command::new(chromedriver_path())
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start chromedriver");
        let url = format!("http://127.0.0.1:{port}");
        let status = format!("{url}/status");
        wait_until("chromedriver to answer", WAIT, || async {
            let response = reqwest::get(&status).await.ok()?;
            let body: Value = response.json().await.ok()?;
            (body["value"]["ready"] == true).then_some(())
        })
        .await;
        Driver { child, url }
    }

    async fn browser(&self) -> Client {
        let mut capabilities = serde_json::Map::new();
        let mut options = json!({"args": [
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--window-size=1200,900", "--lang=en-US"
        ]});
        if let Some(binary) = std::env::var_os("LEERSPOOR_CHROMIUM") {
            options["binary"] = json!(binary.to_string_lossy());
        }
        capabilities.insert("goog:chromeOptions".into(), options);
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .expect("a Chromium session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

async fn screenshot(browser: &Client, name: &str) {
    let png = browser.screenshot().await.expect("screenshot");
    let mut places =
        vec![PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/dashboard-screenshots")];
    if let Some(extra) = std::env::var_os("LEERSPOOR_SCREENSHOTS_TO") {
        places.push(PathBuf::from(extra));
    }
    for dir in places {
        std::fs::create_dir_all(&dir).expect("screenshot folder");
        std::fs::write(dir.join(format!("dashboard-{name}.png")), &png).expect("screenshot");
    }
}

async fn figure(browser: &Client, name: &str) -> String {
    browser
        .find(Locator::Css(&format!("[data-figure=\"{name}\"]")))
        .await
        .unwrap_or_else(|err| panic!("figure {name}: {err}"))
        .text()
        .await
        .expect("text")
}

/// The cells of a table's body, row by row.
async fn rows(browser: &Client, table: &str) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    for row in browser
        .find_all(Locator::Css(&format!("table#{table} tbody tr")))
        .await
        .expect("rows")
    {
        let mut cells = Vec::new();
        for cell in row.find_all(Locator::Css("th, td")).await.expect("cells") {
            cells.push(cell.text().await.expect("cell"));
        }
        found.push(cells);
    }
    found
}

/// Waits for the page's charts to be drawn by uPlot (the script marks them).
async fn charts_drawn(browser: &Client) {
    browser
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css(
            "html[data-charts-ready] div.plot[data-drawn] canvas",
        ))
        .await
        .expect("a chart drawn");
}

async fn api(app: &TestApp, path: &str) -> Value {
    app.summary(path)
        .await
        .unwrap_or_else(|| panic!("GET {path} answered"))
}

#[tokio::test]
async fn the_dashboard_shows_what_the_summary_api_says_in_a_real_browser() {
    let app = TestApp::start().await;
    let statements = 1200;
    leerspoor::demo::run(
        leerspoor::demo::DemoArgs {
            endpoint: format!("{}/xapi", app.base),
            key: KEY.into(),
            secret: SECRET.into(),
            statements,
            hub_nats_url: None,
        },
        None,
    )
    .await
    .expect("demo data");
    // The demo voids three of every hundred statements; each counts for its one worker.
    let counted = statements - statements / 100 * 3;
    let programme = wait_until("the projector to count the demo", WAIT, || async {
        let programme = app.summary("/summaries/programme").await?;
        (programme["statements"] == json!(counted)).then_some(programme)
    })
    .await;

    let driver = Driver::start().await;
    let browser = driver.browser().await;
    let port = app.base.rsplit(':').next().expect("port");
    let origin = format!("http://127.0.0.1:{port}");
    // Basic credentials in the first address; Chromium keeps them for the origin.
    browser
        .goto(&format!(
            "http://{KEY}:{SECRET}@127.0.0.1:{port}/dashboard?lang=en"
        ))
        .await
        .expect("overview");
    charts_drawn(&browser).await;
    assert_eq!(
        figure(&browser, "companies_reached").await,
        programme["companies_reached"].to_string()
    );
    assert_eq!(
        figure(&browser, "workers").await,
        programme["workers"].to_string()
    );
    assert_eq!(figure(&browser, "target").await, "6000");
    let months = rows(&browser, "months").await;
    let api_months = programme["months"].as_array().expect("months");
    assert_eq!(months.len(), api_months.len());
    for (shown, month) in months.iter().zip(api_months) {
        assert_eq!(shown[0], month["month"].as_str().expect("month"));
        assert_eq!(
            shown[1],
            month["attendance"].to_string(),
            "attendance {shown:?}"
        );
        assert_eq!(
            shown[2],
            month["workers"].to_string(),
            "active workers {shown:?}"
        );
    }
    let reach = rows(&browser, "reach").await;
    assert_eq!(
        reach.last().expect("a month")[2],
        programme["companies_reached"].to_string(),
        "the cumulative reach ends at the companies reached"
    );
    let types = rows(&browser, "types").await;
    assert_eq!(types.len(), 2, "technohubs and fieldlabs: {types:?}");
    let regions = rows(&browser, "regions").await;
    assert_eq!(
        regions.len(),
        programme["by_region"].as_array().expect("regions").len(),
        "{regions:?}"
    );
    assert_eq!(regions.len(), 8, "the demo's eight regions: {regions:?}");
    let hubs = rows(&browser, "hubs").await;
    assert_eq!(hubs.len(), 12);
    let api_hubs = api(&app, "/summaries/hubs?sort=workers&order=desc").await;
    assert_eq!(
        hubs[0][4],
        api_hubs["items"][0]["workers"].to_string(),
        "the best reaching hub comes first"
    );
    screenshot(&browser, "overview").await;

    // The hubs table as CSV: the same rows as the page.
    let csv_href = browser
        .find(Locator::Css("a.csv-link[data-table=\"hubs\"]"))
        .await
        .expect("csv link")
        .attr("href")
        .await
        .expect("href")
        .expect("an address");
    let csv_text = app
        .http
        .get(format!("{origin}{csv_href}"))
        .basic_auth(KEY, Some(SECRET))
        .send()
        .await
        .expect("csv")
        .text()
        .await
        .expect("csv text");
    let mut reader = csv::Reader::from_reader(csv_text.as_bytes());
    let csv_rows: Vec<Vec<String>> = reader
        .records()
        .map(|record| record.expect("csv row").iter().map(str::to_owned).collect())
        .collect();
    assert_eq!(csv_rows, hubs, "the CSV download holds the table shown");

    // Hub → company → worker, by clicking.
    let hub_id = hubs[0][0].clone();
    browser
        .find(Locator::LinkText(&hub_id))
        .await
        .expect("hub link")
        .click()
        .await
        .expect("to the hub");
    charts_drawn(&browser).await;
    let hub = api(&app, &format!("/summaries/hubs/{hub_id}")).await;
    assert_eq!(
        figure(&browser, "workers").await,
        hub["workers"].to_string()
    );
    assert_eq!(
        figure(&browser, "companies").await,
        hub["companies"].to_string()
    );
    let skills = rows(&browser, "skills").await;
    assert_eq!(
        skills[0][0],
        hub["skill_workers"][0]["label"]["en"]
            .as_str()
            .expect("a label"),
        "skills show the names the statements give them"
    );
    assert_eq!(skills[0][2], hub["skill_workers"][0]["workers"].to_string());
    screenshot(&browser, "hub").await;

    let companies = rows(&browser, "companies").await;
    let company_id = companies[0][0].clone();
    browser
        .find(Locator::LinkText(&company_id))
        .await
        .expect("company link")
        .click()
        .await
        .expect("to the company");
    charts_drawn(&browser).await;
    let company = api(&app, &format!("/summaries/companies/{company_id}")).await;
    assert_eq!(
        figure(&browser, "workers").await,
        company["workers"].to_string()
    );
    assert_eq!(
        figure(&browser, "completed_activities").await,
        company["completed_activities"].to_string()
    );
    screenshot(&browser, "company").await;

    let workers = rows(&browser, "workers").await;
    assert_eq!(workers.len().to_string(), company["workers"].to_string());
    let worker_id = workers[0][0].clone();
    browser
        .find(Locator::LinkText(&worker_id))
        .await
        .expect("worker link")
        .click()
        .await
        .expect("to the worker");
    charts_drawn(&browser).await;
    let agent = json!({"mbox": worker_id.trim_start_matches("mbox:")}).to_string();
    let worker = api(
        &app,
        &format!(
            "/summaries/workers?{}",
            serde_urlencoded::to_string([("agent", agent)]).expect("query")
        ),
    )
    .await;
    assert_eq!(
        figure(&browser, "statements").await,
        worker["statements"].to_string()
    );
    let hubs_of_worker = rows(&browser, "hubs").await;
    assert_eq!(
        hubs_of_worker.len(),
        worker["hubs"].as_array().expect("hubs").len()
    );
    screenshot(&browser, "worker").await;

    // Search by identifier lands on the page; Dutch labels on request.
    let search = browser.find(Locator::Id("q")).await.expect("search field");
    search.send_keys(&company_id).await.expect("type");
    browser
        .find(Locator::Css("form[role=search] button"))
        .await
        .expect("search button")
        .click()
        .await
        .expect("search");
    // The click starts a navigation; the URL changes once the company's page has loaded.
    let wanted = format!("/dashboard/companies/{company_id}");
    let deadline = std::time::Instant::now() + WAIT;
    let mut url = browser.current_url().await.expect("url");
    while !url.path().ends_with(&wanted) && std::time::Instant::now() < deadline {
        url = browser.current_url().await.expect("url");
    }
    assert!(url.path().ends_with(&wanted), "{url}");
    browser
        .goto(&format!("{origin}/dashboard?lang=nl"))
        .await
        .expect("overview in Dutch");
    let title = browser
        .find(Locator::Css("h1"))
        .await
        .expect("h1")
        .text()
        .await
        .expect("title");
    assert!(title.contains("programmadashboard"), "{title}");
    browser.close().await.expect("close the browser");
    app.stop().await;
}

#[tokio::test]
async fn the_dashboard_needs_the_summaries_scope_and_escapes_what_statements_bring() {
    let app = TestApp::start().await;
    let writer_key = app
        .grant(
            "dashboard-writer",
            &[bus::access::Scope::StatementsWrite],
            None,
        )
        .await;
    let writer = crate::helpers::secret_of(&writer_key);
    let response = app
        .http
        .get(format!("{}/dashboard", app.base))
        .send()
        .await
        .expect("dashboard");
    assert_eq!(response.status(), reqwest::StatusCode::UNAUTHORIZED);
    assert!(response.headers().contains_key("www-authenticate"));
    let response = app
        .http
        .get(format!("{}/dashboard", app.base))
        .basic_auth("dashboard-writer", Some(&writer))
        .send()
        .await
        .expect("dashboard");
    assert_eq!(response.status(), reqwest::StatusCode::FORBIDDEN);
    // A company id is whatever a statement says: it must come out as text, never as markup.
    let hostile = "<img src=x onerror=alert(1)>";
    let mut statement = crate::helpers::hub_statement("ann@example.org", "eindhoven");
    statement["context"]["extensions"]["https://w3id.org/xapi/llo/extensions/company"] =
        json!(hostile);
    let posted = app.post_statements(&json!([statement])).await;
    assert!(posted.status().is_success(), "{posted:?}");
    let path = format!(
        "/dashboard/companies/{}",
        percent_encoding::utf8_percent_encode(hostile, percent_encoding::NON_ALPHANUMERIC)
    );
    let page = wait_until("the company page", WAIT, || async {
        let response = app
            .http
            .get(format!("{}{path}", app.base))
            .basic_auth(KEY, Some(SECRET))
            .send()
            .await
            .ok()?;
        (response.status() == reqwest::StatusCode::OK).then_some(response)
    })
    .await;
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .expect("csp")
        .to_owned();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let html = page.text().await.expect("html");
    assert!(!html.contains(hostile), "the company id is escaped");
    assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"));
    let missing = app
        .http
        .get(format!("{}/dashboard/search?q=nobody-at-all", app.base))
        .basic_auth(KEY, Some(SECRET))
        .send()
        .await
        .expect("search");
    assert_eq!(missing.status(), reqwest::StatusCode::NOT_FOUND);
    assert!(missing
        .text()
        .await
        .expect("text")
        .contains("Nothing found for"));
    app.stop().await;
}
