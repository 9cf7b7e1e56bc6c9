//! Unit tests of the document resources.
use super::*;

/// Reads answered as the store's API does, writes applied as the store applies an `LRS_IN`
/// message: one batch each. (Concurrent writers are ordered by the log, so the tests of
/// racing merges and `If-Match` go through HTTP: `tests/it/documents.rs`.)
trait Handle {
    fn handle(&self, request: &DocumentRequest, body: &[u8]) -> Result<Answer, DbError>;
}

impl Handle for Documents<'_> {
    fn handle(&self, request: &DocumentRequest, body: &[u8]) -> Result<Answer, DbError> {
        if matches!(request.op, DocumentOp::Get | DocumentOp::List) {
            return self.read(request);
        }
        let mut batch = sled::Batch::default();
        let updated = xapi::time::format_timestamp(chrono::Utc::now());
        let answer = self.apply(request, body, &updated, &mut batch)?;
        self.tree.apply_batch(batch)?;
        Ok(answer)
    }
}

fn request(op: DocumentOp, id: Option<&str>, content_type: &str) -> DocumentRequest {
    DocumentRequest {
        op,
        kind: DocumentKind::ActivityProfile,
        scope: bus::wire::document_scope("https://x.example/a", "", ""),
        writer: Some("tool".into()),
        own_only: false,
        id: id.map(str::to_owned),
        since: None,
        content_type: Some(content_type.into()),
        if_match: None,
        if_none_match: None,
        precondition: Precondition::RequiredToOverwrite,
    }
}

#[test]
fn post_merges_json_objects_and_refuses_anything_else() {
    let dir = tempfile::tempdir().expect("temp dir");
    let tree = sled::open(dir.path()).expect("sled");
    let documents = Documents {
        tree: &tree,
        max_bytes: 1 << 20,
    };
    let post = request(DocumentOp::Post, Some("p"), "application/json");
    let (reply, _) = documents
        .handle(&post, br#"{"a": 1, "b": 1}"#)
        .expect("post");
    assert_eq!(reply.status, DocumentStatus::NoContent);
    let (reply, _) = documents
        .handle(&post, br#"{"b": 2, "c": 3}"#)
        .expect("merge");
    assert_eq!(reply.status, DocumentStatus::NoContent);
    let (reply, body) = documents
        .handle(&request(DocumentOp::Get, Some("p"), ""), b"")
        .expect("get");
    assert_eq!(reply.status, DocumentStatus::Ok);
    let merged: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(merged, serde_json::json!({"a": 1, "b": 2, "c": 3}));

    let text = request(DocumentOp::Post, Some("p"), "text/plain");
    let (reply, _) = documents.handle(&text, b"hello").expect("post text");
    assert_eq!(reply.status, DocumentStatus::BadRequest);
    let (reply, _) = documents.handle(&post, b"[1, 2]").expect("post array");
    assert_eq!(reply.status, DocumentStatus::BadRequest);
    let (_, body) = documents
        .handle(&request(DocumentOp::Get, Some("p"), ""), b"")
        .expect("get");
    assert_eq!(
        serde_json::from_slice::<Value>(&body).expect("json"),
        merged,
        "unchanged"
    );
}

#[test]
fn etags_guard_overwrites() {
    let dir = tempfile::tempdir().expect("temp dir");
    let tree = sled::open(dir.path()).expect("sled");
    let documents = Documents {
        tree: &tree,
        max_bytes: 1 << 20,
    };
    let put = request(DocumentOp::Put, Some("p"), "text/plain");
    assert_eq!(
        documents.handle(&put, b"one").expect("put").0.status,
        DocumentStatus::NoContent
    );
    assert_eq!(
        documents.handle(&put, b"two").expect("put").0.status,
        DocumentStatus::Conflict
    );
    let (reply, _) = documents
        .handle(&request(DocumentOp::Get, Some("p"), ""), b"")
        .expect("get");
    let etag = reply.etag.expect("etag");
    let mut wrong = put.clone();
    wrong.if_match = Some("\"0000\"".into());
    assert_eq!(
        documents.handle(&wrong, b"two").expect("put").0.status,
        DocumentStatus::PreconditionFailed
    );
    let mut right = put.clone();
    right.if_match = Some(etag);
    assert_eq!(
        documents.handle(&right, b"two").expect("put").0.status,
        DocumentStatus::NoContent
    );
    let mut create_only = put;
    create_only.if_none_match = Some("*".into());
    assert_eq!(
        documents
            .handle(&create_only, b"three")
            .expect("put")
            .0
            .status,
        DocumentStatus::PreconditionFailed
    );
    let (_, body) = documents
        .handle(&request(DocumentOp::Get, Some("p"), ""), b"")
        .expect("get");
    assert_eq!(body, b"two");
}

fn database(dir: &tempfile::TempDir) -> crate::db::Db {
    crate::db::Db::open(dir.path()).expect("open")
}

fn state_request(op: DocumentOp, id: &str, agent: &str, writer: &str) -> DocumentRequest {
    DocumentRequest {
        op,
        kind: DocumentKind::State,
        scope: bus::wire::document_scope("https://x.example/a", agent, ""),
        writer: Some(writer.into()),
        own_only: false,
        id: Some(id.into()),
        since: None,
        content_type: Some("application/json".into()),
        if_match: None,
        if_none_match: None,
        precondition: Precondition::Optional,
    }
}

#[test]
fn a_confined_credential_sees_and_changes_only_documents_it_wrote() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = database(&dir);
    let documents = db.documents();
    let agent = "mbox:mailto:a@x.org";
    let theirs = state_request(DocumentOp::Put, "theirs", agent, "other");
    documents.handle(&theirs, b"{\"secret\": 1}").expect("put");
    let mut mine = state_request(DocumentOp::Put, "mine", agent, "mine");
    mine.own_only = true;
    assert_eq!(
        documents.handle(&mine, b"{}").expect("put").0.status,
        DocumentStatus::NoContent
    );
    let confined = |op: DocumentOp, id: &str| {
        let mut request = state_request(op, id, agent, "mine");
        request.own_only = true;
        request
    };
    assert_eq!(
        documents
            .handle(&confined(DocumentOp::Get, "theirs"), b"")
            .expect("get")
            .0
            .status,
        DocumentStatus::NotFound
    );
    assert_eq!(
        documents
            .handle(&confined(DocumentOp::Put, "theirs"), b"{}")
            .expect("put")
            .0
            .status,
        DocumentStatus::Forbidden
    );
    let mut list = confined(DocumentOp::List, "");
    list.id = None;
    let (_, ids) = documents.handle(&list, b"").expect("list");
    assert_eq!(
        serde_json::from_slice::<Vec<String>>(&ids).expect("ids"),
        ["mine"]
    );
    let mut delete_all = confined(DocumentOp::DeleteAll, "");
    delete_all.id = None;
    documents.handle(&delete_all, b"").expect("delete");
    let (reply, body) = documents
        .handle(
            &state_request(DocumentOp::Get, "theirs", agent, "other"),
            b"",
        )
        .expect("get");
    assert_eq!(
        reply.status,
        DocumentStatus::Ok,
        "another's document survives"
    );
    assert_eq!(body, b"{\"secret\": 1}");
}

#[test]
fn a_newline_in_an_account_name_cannot_reach_another_scope() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = database(&dir);
    let documents = db.documents();
    // Joined by newlines, these two scopes were the same text.
    let mut plain = state_request(DocumentOp::Put, "s", "account:https://x.org|ann", "tool");
    plain.scope =
        bus::wire::document_scope("https://x.example/a", "account:https://x.org|ann", "r");
    let mut crafted = plain.clone();
    crafted.scope =
        bus::wire::document_scope("https://x.example/a", "account:https://x.org|ann\nr", "");
    documents
        .handle(&plain, b"{\"who\": \"ann\"}")
        .expect("put");
    let mut get = crafted.clone();
    get.op = DocumentOp::Get;
    assert_eq!(
        documents.handle(&get, b"").expect("get").0.status,
        DocumentStatus::NotFound
    );
}

#[test]
fn merges_cannot_grow_a_document_past_its_limit() {
    let dir = tempfile::tempdir().expect("temp dir");
    let tree = sled::open(dir.path()).expect("sled");
    let documents = Documents {
        tree: &tree,
        max_bytes: 64,
    };
    let post = state_request(DocumentOp::Post, "s", "mbox:mailto:a@x.org", "tool");
    let half = format!("{{\"a\": \"{}\"}}", "x".repeat(40));
    assert_eq!(
        documents
            .handle(&post, half.as_bytes())
            .expect("post")
            .0
            .status,
        DocumentStatus::NoContent
    );
    let other = format!("{{\"b\": \"{}\"}}", "y".repeat(40));
    assert_eq!(
        documents
            .handle(&post, other.as_bytes())
            .expect("post")
            .0
            .status,
        DocumentStatus::TooLarge
    );
}

#[test]
fn documents_of_the_newline_layout_are_rekeyed_at_open() {
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let tree = sled::open(dir.path()).expect("sled");
        let old_scope = "https://x.example/a\nmbox:mailto:a@x.org\n";
        let meta = DocumentMeta {
            scope: old_scope.into(),
            id: "s".into(),
            content_type: "application/json".into(),
            sha1: "00".into(),
            updated: "2026-01-01T00:00:00.000Z".into(),
            writers: Vec::new(),
        };
        let framed = bus::wire::frame(&meta, b"{\"old\": true}").expect("frame");
        tree.insert(document_key(DocumentKind::State, old_scope, "s"), framed)
            .expect("insert");
        tree.flush().expect("flush");
    }
    // sled's threads may still hold the lock of the handle just dropped.
    let db = crate::db::tests::reopen(dir.path());
    let get = state_request(DocumentOp::Get, "s", "mbox:mailto:a@x.org", "tool");
    let (reply, body) = db.documents().handle(&get, b"").expect("get");
    assert_eq!(reply.status, DocumentStatus::Ok);
    assert_eq!(body, b"{\"old\": true}");
}
