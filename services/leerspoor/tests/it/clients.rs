//! Real xAPI client libraries against a running Leerspoor.

use std::path::PathBuf;

use crate::helpers::{TestApp, KEY, SECRET};

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The Python with PyPI's `tincan` installed by `deploy/test.sh`.
fn tincan_python() -> PathBuf {
    let python = std::env::var_os("LEERSPOOR_TINCAN_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".tools/clients/venv/bin/python"));
    assert!(
        python.is_file(),
        "no Python with tincan at {}: run deploy/test.sh, which installs it",
        python.display()
    );
    python
}

#[tokio::test]
async fn the_tincan_python_client_round_trips_statements_and_state() {
    let app = TestApp::start().await;
    let script = workspace_root().join("deploy/clients/tincan_check.py");
    let output = tokio::process::Command::new(tincan_python())
        .arg(script)
        .arg(format!("{}/xapi/", app.base))
        .arg(KEY)
        .arg(SECRET)
        .output()
        .await
        .expect("run the tincan client");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "tincan client failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("round-trip"), "{stdout}");
}
