//! Headless Chromium for the consumer-page tests: find the tools, dump a page's DOM once
//! its scripts are done, take a phone-sized screenshot, read a verdict box.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Longest a browser run may take.
pub const BROWSER_TIMEOUT: Duration = Duration::from_secs(90);

/// A tool from `$env`, else the first of `names` on PATH; panics naming the Debian package.
pub fn tool(env: &str, names: &[&str], package: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        return PathBuf::from(p);
    }
    for name in names {
        if let Some(dir) =
            std::env::var_os("PATH").iter().flat_map(std::env::split_paths).find(|d| d.join(name).is_file())
        {
            return dir.join(name);
        }
    }
    panic!("{} not found: run scripts/setup.sh (it installs the Debian package {package}) or set {env}", names[0]);
}

pub fn chromium() -> PathBuf {
    tool("VERITRACE_CHROMIUM", &["chromium", "chromium-browser", "google-chrome"], "chromium")
}

/// Runs headless Chromium with `args` in its own profile directory; its stdout.
pub async fn run_chromium(args: &[String], profile: &Path) -> Vec<u8> {
    let out = tokio::time::timeout(
        BROWSER_TIMEOUT,
        tokio::process::Command::new(chromium())
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars"])
            // Virtual time runs until the page is idle: the verifier's fetch and checks end.
            .arg("--virtual-time-budget=20000")
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("chromium finished in time")
    .expect("chromium runs");
    assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// The DOM of `url` once its scripts are done.
pub async fn dump_dom(url: &str, profile: &Path) -> String {
    String::from_utf8(run_chromium(&["--dump-dom".into(), url.into()], profile).await).expect("utf-8 dom")
}

/// A phone-sized screenshot of `url` (412 px wide, the whole page's height) to `file`.
pub async fn screenshot(url: &str, file: &Path, profile: &Path) {
    let args = ["--window-size=412,3200".to_string(), format!("--screenshot={}", file.display()), url.to_string()];
    run_chromium(&args, profile).await;
    assert!(file.is_file(), "no screenshot at {}", file.display());
}

/// The state and text of a verdict box (`server` or `browser`) of a page.
pub fn verdict(dom: &str, which: &str) -> (String, String) {
    let tail = &dom[dom.find(&format!("id=\"vt-{which}-verdict\"")).expect("a verdict box")..];
    let state = tail.split("data-state=\"").nth(1).and_then(|s| s.split('"').next()).unwrap_or_default();
    let text = tail
        .split(&format!("id=\"vt-{which}-text\">"))
        .nth(1)
        .and_then(|s| s.split("</span>").next())
        .unwrap_or_default()
        .replace("&quot;", "\"")
        .replace("&amp;", "&");
    (state.to_string(), text)
}
