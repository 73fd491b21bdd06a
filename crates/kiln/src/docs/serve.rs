//! `kiln docs --serve`: the site over HTTP on 127.0.0.1, rebuilt when the project changes.
//!
//! Our own few lines of HTTP rather than a server crate: the server answers `GET` and
//! `HEAD` for the site's static files and one version endpoint, on the loopback interface,
//! with a thread per connection (std::net; nothing else in Kiln needs an HTTP server, and
//! one would cost compile time for every build of the binary).
//!
//! Changes are found by polling (every 500 ms) the SQL files' and kiln.toml's sizes and
//! modification times and the runs kept in the artifact store: any `kiln build` writes a
//! run. Pages served over HTTP poll `/__kiln/version` and reload when it moves.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use super::DocsReport;
use crate::KilnError;
use crate::events::BuildOptions;

/// What the server reports while it runs.
#[derive(Debug)]
pub enum ServeEvent<'a> {
    /// Listening on this address (the site is at `http://{addr}/`).
    Listening(SocketAddr),
    /// The site was (re)written.
    Built(&'a DocsReport),
    /// Rebuilding failed; the previous site is still served.
    Failed(&'a KilnError),
}

/// The path the pages poll for the site's version.
pub const VERSION_PATH: &str = "/__kiln/version";

/// Writes the site, serves it on `127.0.0.1:port` (0: any free port) and rebuilds it on
/// every change until `stop` resolves (the CLI passes Ctrl-C).
pub async fn serve(
    dir: &Path,
    out: &Path,
    port: u16,
    options: &BuildOptions,
    report: &(dyn Fn(ServeEvent<'_>) + Sync),
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), KilnError> {
    let built = super::docs(dir, out, options).await?;
    report(ServeEvent::Built(&built));
    let listener = TcpListener::bind(("127.0.0.1", port))
        .map_err(|source| KilnError::Io { context: format!("cannot listen on 127.0.0.1:{port}"), source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| KilnError::Io { context: "cannot read the listening address".into(), source })?;
    let version = Arc::new(AtomicU64::new(1));
    let (root, served) = (out.to_path_buf(), Arc::clone(&version));
    std::thread::spawn(move || accept(&listener, &root, &served));
    report(ServeEvent::Listening(addr));

    let mut seen = project_state(dir, out);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return Ok(()),
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        let now = project_state(dir, out);
        if now == seen {
            continue;
        }
        seen = now;
        match super::docs(dir, out, options).await {
            Ok(built) => {
                version.fetch_add(1, Ordering::SeqCst);
                report(ServeEvent::Built(&built));
            }
            Err(e) => report(ServeEvent::Failed(&e)),
        }
    }
}

/// What a change of the site's inputs changes: each SQL file's and kiln.toml's path, size
/// and modification time, and the runs kept.
fn project_state(dir: &Path, out: &Path) -> Vec<(PathBuf, u64, Option<SystemTime>)> {
    let mut state = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                let skipped =
                    name.starts_with('.') || ["warehouse", "data", "target", "node_modules"].contains(&name.as_str());
                if !skipped && path != out {
                    stack.push(path);
                }
            } else if name.ends_with(".sql") || (d == dir && name == "kiln.toml") {
                state.push((path, meta.len(), meta.modified().ok()));
            }
        }
    }
    if let Ok(runs) = std::fs::read_dir(dir.join(".kiln").join("runs")) {
        state.extend(runs.flatten().map(|r| (r.path(), 0, None)));
    }
    state.sort();
    state
}

fn accept(listener: &TcpListener, root: &Path, version: &Arc<AtomicU64>) {
    for stream in listener.incoming().flatten() {
        let (root, version) = (root.to_path_buf(), Arc::clone(version));
        std::thread::spawn(move || {
            // A client that goes away mid-answer is its own business.
            let _ = answer(stream, &root, &version);
        });
    }
}

fn answer(mut stream: TcpStream, root: &Path, version: &AtomicU64) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request = String::new();
    // Request line and headers, at most 16 KiB.
    let mut limited = (&mut reader).take(16 * 1024);
    limited.read_line(&mut request)?;
    loop {
        let mut header = String::new();
        if limited.read_line(&mut header)? == 0 || header == "\r\n" || header == "\n" {
            break;
        }
    }
    let mut parts = request.split_whitespace();
    let (method, target) = (parts.next().unwrap_or_default(), parts.next().unwrap_or("/"));
    if method != "GET" && method != "HEAD" {
        return respond(&mut stream, "405 Method Not Allowed", "text/plain", b"GET or HEAD only\n", method == "HEAD");
    }
    let path = target.split(['?', '#']).next().unwrap_or("/");
    if path == VERSION_PATH {
        let v = version.load(Ordering::SeqCst).to_string();
        return respond(&mut stream, "200 OK", "text/plain", v.as_bytes(), method == "HEAD");
    }
    let Some(rel) = site_path(path) else {
        return respond(&mut stream, "400 Bad Request", "text/plain", b"bad path\n", method == "HEAD");
    };
    match std::fs::read(root.join(&rel)) {
        Ok(bytes) => respond(&mut stream, "200 OK", content_type(&rel), &bytes, method == "HEAD"),
        Err(_) => respond(&mut stream, "404 Not Found", "text/plain", b"not found\n", method == "HEAD"),
    }
}

/// A request path as a path inside the site (percent-decoded; `/` is `index.html`), or
/// `None` when it would leave the site.
fn site_path(path: &str) -> Option<PathBuf> {
    let mut bytes = Vec::with_capacity(path.len());
    let raw = path.as_bytes();
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' {
            let hex = std::str::from_utf8(raw.get(i + 1..i + 3)?).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            bytes.push(raw[i]);
            i += 1;
        }
    }
    let decoded = String::from_utf8(bytes).ok()?;
    let rel = decoded.trim_start_matches('/');
    let rel = if rel.is_empty() || rel.ends_with('/') { format!("{rel}index.html") } else { rel.to_owned() };
    let rel = PathBuf::from(rel);
    rel.components().all(|c| matches!(c, Component::Normal(_))).then_some(rel)
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json") => "application/json",
        Some("png") => "image/png",
        Some("svg") => "image/svg+xml",
        _ => "application/octet-stream",
    }
}

fn respond(stream: &mut TcpStream, status: &str, kind: &str, body: &[u8], head: bool) -> std::io::Result<()> {
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )?;
    if !head {
        stream.write_all(body)?;
    }
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_paths_stay_inside_the_site() {
        assert_eq!(site_path("/"), Some(PathBuf::from("index.html")));
        assert_eq!(site_path("/nodes/a%7e.html"), Some(PathBuf::from("nodes/a~.html")));
        assert_eq!(site_path("/nodes/"), Some(PathBuf::from("nodes/index.html")));
        assert_eq!(site_path("/../etc/passwd"), None);
        assert_eq!(site_path("/a/%2e%2e/%2e%2e/x"), None);
        assert_eq!(site_path("/%zz"), None);
        assert_eq!(site_path("//etc/passwd"), Some(PathBuf::from("etc/passwd")), "still under the root");
    }
}
