//! Credentials and scopes over HTTP: every scope on every kind of route, 401 against 403,
//! `statements/read/mine`, `define`, rate limits, and rotation and revocation from the CLI
//! taking effect without a restart.

use bus::access::Scope;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use testkit::wait_until;

use crate::helpers::{leerspoor_ok, new_id, secret_of, statement, with_id, TestApp, KEY, WAIT};

/// A request on one route, as a credential would send it.
struct Route {
    name: &'static str,
    method: Method,
    path: String,
    body: Option<Value>,
    /// The scopes that may call it, as the xAPI spec and the README say: written out here,
    /// not taken from the gateway's table.
    allowed: &'static [&'static str],
}

fn routes() -> Vec<Route> {
    let agent = urlencode(r#"{"mbox":"mailto:ann@example.org"}"#);
    let activity = urlencode("https://x.example/a/1");
    let route = |name, method, path: String, body, allowed| Route {
        name,
        method,
        path,
        body,
        allowed,
    };
    vec![
        route(
            "GET statements",
            Method::GET,
            "/xapi/statements".into(),
            None,
            &["all", "all/read", "statements/read", "statements/read/mine"],
        ),
        route(
            "HEAD statements",
            Method::HEAD,
            "/xapi/statements".into(),
            None,
            &["all", "all/read", "statements/read", "statements/read/mine"],
        ),
        route(
            "PUT statements",
            Method::PUT,
            format!("/xapi/statements?statementId={}", new_id()),
            Some(statement(
                "ann@example.org",
                "attended",
                "https://x.example/a/1",
            )),
            &["all", "statements/write"],
        ),
        route(
            "POST statements",
            Method::POST,
            "/xapi/statements".into(),
            Some(statement(
                "ann@example.org",
                "attended",
                "https://x.example/a/1",
            )),
            &["all", "statements/write"],
        ),
        route(
            "POST state",
            Method::POST,
            format!("/xapi/activities/state?activityId={activity}&agent={agent}&stateId=s"),
            Some(json!({"page": 1})),
            &["all", "state"],
        ),
        route(
            "DELETE state",
            Method::DELETE,
            format!("/xapi/activities/state?activityId={activity}&agent={agent}&stateId=s"),
            None,
            &["all", "state"],
        ),
        route(
            "GET state",
            Method::GET,
            format!("/xapi/activities/state?activityId={activity}&agent={agent}"),
            None,
            &["all", "all/read", "state"],
        ),
        route(
            "POST activity profile",
            Method::POST,
            format!("/xapi/activities/profile?activityId={activity}&profileId=p"),
            Some(json!({"x": 1})),
            &["all", "profile"],
        ),
        route(
            "GET activity profile ids",
            Method::GET,
            format!("/xapi/activities/profile?activityId={activity}"),
            None,
            &["all", "all/read", "profile"],
        ),
        route(
            "POST agent profile",
            Method::POST,
            format!("/xapi/agents/profile?agent={agent}&profileId=p"),
            Some(json!({"y": 2})),
            &["all", "profile"],
        ),
        route(
            "GET agent profile",
            Method::GET,
            format!("/xapi/agents/profile?agent={agent}"),
            None,
            &["all", "all/read", "profile"],
        ),
        route(
            "GET activities",
            Method::GET,
            format!("/xapi/activities?activityId={activity}"),
            None,
            &["all", "all/read", "define"],
        ),
        route(
            "GET agents",
            Method::GET,
            format!("/xapi/agents?agent={agent}"),
            None,
            &["all", "all/read", "define"],
        ),
        route(
            "GET summaries",
            Method::GET,
            "/summaries/hubs".into(),
            None,
            &["summaries/read"],
        ),
        route(
            "GET worker summaries",
            Method::GET,
            "/summaries/workers".into(),
            None,
            &["summaries/read"],
        ),
        route(
            "GET audit log",
            Method::GET,
            "/admin/audit".into(),
            None,
            &["admin"],
        ),
        route(
            "GET credentials",
            Method::GET,
            "/admin/credentials".into(),
            None,
            &["admin"],
        ),
        route(
            "GET export",
            Method::GET,
            format!("/admin/exports?agent={agent}"),
            None,
            &["admin"],
        ),
        route(
            "POST erasure",
            Method::POST,
            "/admin/erasures".into(),
            Some(json!({"agent": {"mbox": "mailto:nobody@example.org"}})),
            &["admin"],
        ),
    ]
}

fn urlencode(value: &str) -> String {
    serde_urlencoded::to_string([("v", value)]).expect("encode")[2..].to_owned()
}

async fn send(app: &TestApp, key: &str, route: &Route) -> reqwest::Response {
    let mut request = app.request_with(key, route.method.clone(), &route.path);
    if let Some(body) = &route.body {
        request = request.json(body);
    }
    request.send().await.expect("http")
}

#[tokio::test]
async fn each_scope_opens_exactly_its_routes() {
    let app = TestApp::start().await;
    for scope in Scope::EVERY {
        let key = format!("only-{}", scope.as_str().replace('/', "-"));
        app.grant(&key, &[scope], None).await;
        for route in routes() {
            let response = send(&app, &key, &route).await;
            let status = response.status();
            if route.allowed.contains(&scope.as_str()) {
                assert!(
                    status.is_success(),
                    "{} with scope {scope}: {status} {}",
                    route.name,
                    response.text().await.unwrap_or_default()
                );
            } else {
                assert_eq!(
                    status,
                    StatusCode::FORBIDDEN,
                    "{} with scope {scope}",
                    route.name
                );
                if route.method == Method::HEAD {
                    continue;
                }
                let body: Value = response.json().await.expect("json error");
                assert_eq!(body["code"], "forbidden");
                assert!(
                    body["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("scope")),
                    "a 403 says which scope is missing: {body}"
                );
            }
        }
    }
    // A path that does not exist is a 404 for any valid credential, a 401 without one.
    let response = app
        .request_with("only-statements-write", Method::GET, "/xapi/nothing")
        .send()
        .await
        .expect("http");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let response = app
        .http
        .get(format!("{}/xapi/nothing", app.base))
        .header("X-Experience-API-Version", "2.0.0")
        .send()
        .await
        .expect("http");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn wrong_missing_or_unknown_credentials_are_one_indistinct_401() {
    let app = TestApp::start().await;
    let answers = [
        app.http.get(format!("{}/xapi/statements", app.base)),
        app.http
            .get(format!("{}/xapi/statements", app.base))
            .basic_auth(KEY, Some("not-the-secret")),
        app.http
            .get(format!("{}/xapi/statements", app.base))
            .basic_auth("nobody", Some("not-the-secret")),
        app.http
            .get(format!("{}/xapi/statements", app.base))
            .header("Authorization", "Basic !!!not-base64"),
        app.http
            .get(format!("{}/xapi/statements", app.base))
            .header("Authorization", "Bearer abc"),
        app.http
            .get(format!("{}/summaries/hubs/nowhere", app.base))
            .basic_auth("nobody", Some("x")),
        app.http
            .post(format!("{}/admin/erasures", app.base))
            .json(&json!({"agent": {"mbox": "mailto:ann@example.org"}})),
    ];
    let mut bodies = Vec::new();
    for request in answers {
        let response = request
            .header("X-Experience-API-Version", "2.0.0")
            .send()
            .await
            .expect("http");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            response.headers()["www-authenticate"],
            "Basic realm=\"Leerspoor\""
        );
        bodies.push(response.text().await.expect("body"));
    }
    assert!(
        bodies.windows(2).all(|pair| pair[0] == pair[1]),
        "an unknown key and a wrong secret must not be told apart: {bodies:?}"
    );
    // About is open to all, as xAPI asks.
    let about = app
        .http
        .get(format!("{}/xapi/about", app.base))
        .send()
        .await
        .expect("http");
    assert_eq!(about.status(), StatusCode::OK);
}

async fn post_as(app: &TestApp, key: &str, body: &Value) -> StatusCode {
    app.request_with(key, Method::POST, "/xapi/statements")
        .json(body)
        .send()
        .await
        .expect("http")
        .status()
}

async fn listed_ids(app: &TestApp, key: &str) -> Vec<String> {
    let response = app
        .request_with(key, Method::GET, "/xapi/statements")
        .send()
        .await
        .expect("http");
    assert_eq!(response.status(), StatusCode::OK);
    let page: Value = response.json().await.expect("json");
    let mut ids: Vec<String> = page["statements"]
        .as_array()
        .expect("statements")
        .iter()
        .map(|statement| statement["id"].as_str().expect("id").to_owned())
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn read_mine_sees_only_what_its_credential_wrote_group_authority_included() {
    let app = TestApp::start().await;
    let mine = app
        .grant(
            "mine",
            &[Scope::StatementsWrite, Scope::StatementsReadMine],
            None,
        )
        .await;
    let other = app.grant("other", &[Scope::StatementsWrite], None).await;
    let acting = app
        .grant_record(
            leerspoor::access::record(
                "acting",
                "acting",
                &secret_of("acting"),
                vec![Scope::StatementsWrite, Scope::StatementsReadMine],
                Some(json!({"objectType": "Agent", "mbox": "mailto:hub-office@example.org"})),
                None,
            )
            .expect("hash"),
        )
        .await;
    let ids: Vec<String> = (0..3).map(|_| new_id()).collect();
    let write = |id: &str| {
        with_id(
            statement("ann@example.org", "attended", "https://x.example/1"),
            id,
        )
    };
    assert_eq!(post_as(&app, &mine, &write(&ids[0])).await, StatusCode::OK);
    assert_eq!(post_as(&app, &other, &write(&ids[1])).await, StatusCode::OK);
    assert_eq!(
        post_as(&app, &acting, &write(&ids[2])).await,
        StatusCode::OK
    );

    assert_eq!(listed_ids(&app, &mine).await, vec![ids[0].clone()]);
    assert_eq!(listed_ids(&app, &acting).await, vec![ids[2].clone()]);
    let mut every = ids.clone();
    every.sort();
    assert_eq!(
        listed_ids(&app, KEY).await,
        every,
        "an `all` credential sees all"
    );

    let by_id = |key: &str, id: &str| {
        app.request_with(
            key,
            Method::GET,
            &format!("/xapi/statements?statementId={id}"),
        )
        .send()
    };
    assert_eq!(
        by_id(&mine, &ids[1]).await.expect("http").status(),
        StatusCode::NOT_FOUND,
        "another credential's statement does not exist for read/mine"
    );
    let own: Value = by_id(&mine, &ids[0])
        .await
        .expect("http")
        .json()
        .await
        .expect("json");
    assert_eq!(own["authority"]["account"]["name"], "mine");
    // Acting for someone: the OAuth-style authority, a Group of the tool and that agent.
    let acted: Value = by_id(&acting, &ids[2])
        .await
        .expect("http")
        .json()
        .await
        .expect("json");
    assert_eq!(acted["authority"]["objectType"], "Group");
    assert_eq!(acted["authority"]["member"][0]["account"]["name"], "acting");
    assert_eq!(
        acted["authority"]["member"][1]["mbox"],
        "mailto:hub-office@example.org"
    );
    // A client's own authority claim is replaced by its credential's.
    let mut claim = write(&new_id());
    claim["authority"] = json!({"mbox": "mailto:someone-else@example.org"});
    assert_eq!(post_as(&app, &other, &claim).await, StatusCode::OK);
    let stored: Value = by_id(KEY, claim["id"].as_str().expect("id"))
        .await
        .expect("http")
        .json()
        .await
        .expect("json");
    assert_eq!(stored["authority"]["account"]["name"], "other");
}

#[tokio::test]
async fn only_credentials_with_define_change_an_activity_definition() {
    let app = TestApp::start().await;
    let writer = app.grant("writer", &[Scope::StatementsWrite], None).await;
    let definer = app
        .grant("definer", &[Scope::StatementsWrite, Scope::Define], None)
        .await;
    let activity = "https://x.example/courses/welding";
    let named = |language: &str, name: &str| {
        json!({"actor": {"mbox": "mailto:ann@example.org"}, "verb": {"id": "http://adlnet.gov/expapi/verbs/attended"},
            "object": {"id": activity, "definition": {"name": {language: name}}}})
    };
    assert_eq!(
        post_as(&app, &definer, &named("nl-NL", "Lassen")).await,
        StatusCode::OK
    );
    assert_eq!(
        post_as(&app, &writer, &named("en-US", "Hijacked")).await,
        StatusCode::OK
    );
    let response = app
        .request_with(
            KEY,
            Method::GET,
            &format!("/xapi/activities?activityId={}", urlencode(activity)),
        )
        .send()
        .await
        .expect("http");
    assert_eq!(response.status(), StatusCode::OK);
    let found: Value = response.json().await.expect("json");
    assert_eq!(found["definition"]["name"], json!({"nl-NL": "Lassen"}));
}

#[tokio::test]
async fn a_credential_over_its_rate_gets_429_with_retry_after_and_others_do_not() {
    let app = TestApp::start().await;
    let slow = app.grant("slow", &[Scope::AllRead], Some(3)).await;
    let get = || {
        app.request_with(&slow, Method::GET, "/xapi/statements")
            .send()
    };
    for _ in 0..3 {
        assert_eq!(get().await.expect("http").status(), StatusCode::OK);
    }
    let refused = get().await.expect("http");
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry_after), "Retry-After {retry_after}");
    let body: Value = refused.json().await.expect("json");
    assert_eq!(body["code"], "too_many_requests");
    // Another credential has its own allowance.
    let response = app
        .request_with(KEY, Method::GET, "/xapi/statements")
        .send()
        .await
        .expect("http");
    assert_eq!(response.status(), StatusCode::OK);
}

/// Runs `leerspoor …` against this app's NATS (the operator's way).
async fn cli(app: &TestApp, args: &[&str], stdin: Option<&str>) -> String {
    let url = app.nats.url();
    let mut all = args.to_vec();
    all.extend(["--nats-url", url.as_str()]);
    leerspoor_ok(&all, stdin).await
}

async fn status_with(app: &TestApp, key: &str, secret: &str) -> StatusCode {
    app.http
        .get(format!("{}/xapi/statements", app.base))
        .basic_auth(key, Some(secret))
        .header("X-Experience-API-Version", "2.0.0")
        .send()
        .await
        .expect("http")
        .status()
}

#[tokio::test]
async fn rotation_and_revocation_from_the_cli_take_effect_without_a_restart() {
    let app = TestApp::start().await;
    let created = cli(
        &app,
        &[
            "credentials",
            "create",
            "--key",
            "lms",
            "--name",
            "LMS Eindhoven",
            "--scopes",
            "statements/write,statements/read",
        ],
        None,
    )
    .await;
    let first = created
        .lines()
        .find_map(|line| line.strip_prefix("secret: "))
        .expect("a generated secret is shown once")
        .to_owned();
    assert!(first.len() >= 40, "32 random bytes: {first}");
    assert_eq!(status_with(&app, "lms", &first).await, StatusCode::OK);

    cli(
        &app,
        &["credentials", "rotate", "lms", "--secret-stdin"],
        Some("the-new-secret-of-lms"),
    )
    .await;
    wait_until("the old secret stops working", WAIT, || async {
        (status_with(&app, "lms", &first).await == StatusCode::UNAUTHORIZED).then_some(())
    })
    .await;
    assert_eq!(
        status_with(&app, "lms", "the-new-secret-of-lms").await,
        StatusCode::OK
    );

    cli(&app, &["credentials", "revoke", "lms"], None).await;
    wait_until("a revoked credential stops working", WAIT, || async {
        (status_with(&app, "lms", "the-new-secret-of-lms").await == StatusCode::UNAUTHORIZED)
            .then_some(())
    })
    .await;
    let listed = cli(&app, &["credentials", "list"], None).await;
    let line = listed
        .lines()
        .find(|line| line.starts_with("lms "))
        .expect("listed");
    assert!(line.contains("revoked"), "{line}");
    assert!(!listed.contains("argon2"), "no hashes in listings");

    // Every change is in the audit log, with who made it.
    let audit = app.audit_log().await;
    let actions: Vec<(String, String)> = audit["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|entry| entry["details"]["key"] == "lms")
        .map(|entry| {
            (
                entry["action"].as_str().unwrap_or("").to_owned(),
                entry["actor"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let names: Vec<&str> = actions.iter().map(|(action, _)| action.as_str()).collect();
    assert_eq!(
        names,
        [
            "credential.create",
            "credential.rotate",
            "credential.revoke"
        ]
    );
    assert!(actions.iter().all(|(_, actor)| actor.starts_with("cli:")));
    let shown = cli(&app, &["audit"], None).await;
    assert!(shown.contains("credential.revoke"), "{shown}");
}
