//! A tiny HTTP/1.1 GET over a plain TCP stream, and a reader for the node's Prometheus
//! text. Enough for `/metrics` and `/health` on 127.0.0.1; not a general HTTP client.
//!
//! Every step has a timeout, because a paused (SIGSTOP) node accepts the connection in
//! the kernel and then never answers.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// Longest wait for the TCP connection.
pub const HTTP_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest wait for each read or write once connected.
pub const HTTP_IO_TIMEOUT: Duration = Duration::from_secs(2);
/// Most bytes of a response read; the node's metrics are a few hundred.
pub const HTTP_RESPONSE_BYTES_MAX: u64 = 1024 * 1024;

/// A response: status code and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

/// `GET path` from `addr`, with `Connection: close` so the body ends with the stream.
pub fn get(addr: SocketAddr, path: &str) -> Result<Response> {
    let mut stream =
        TcpStream::connect_timeout(&addr, HTTP_CONNECT_TIMEOUT).with_context(|| format!("connect {addr}"))?;
    stream.set_read_timeout(Some(HTTP_IO_TIMEOUT)).context("set read timeout")?;
    stream.set_write_timeout(Some(HTTP_IO_TIMEOUT)).context("set write timeout")?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAccept: */*\r\n\r\n");
    stream.write_all(request.as_bytes()).with_context(|| format!("send GET {path} to {addr}"))?;
    let mut raw = Vec::new();
    stream
        .take(HTTP_RESPONSE_BYTES_MAX + 1)
        .read_to_end(&mut raw)
        .with_context(|| format!("read response to GET {path} from {addr}"))?;
    if raw.len() as u64 > HTTP_RESPONSE_BYTES_MAX {
        bail!("response to GET {path} from {addr} is larger than {HTTP_RESPONSE_BYTES_MAX} bytes");
    }
    parse_response(&raw).with_context(|| format!("response to GET {path} from {addr}"))
}

/// Parses a whole HTTP/1.1 response (status line, headers, body by length, chunks or end).
fn parse_response(raw: &[u8]) -> Result<Response> {
    let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n").context("no end of headers")?;
    let head = std::str::from_utf8(&raw[..head_end]).context("headers are not utf-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().context("no status line")?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        bail!("status line {status_line:?} is not HTTP/1.x");
    }
    let status: u16 =
        parts.next().and_then(|s| s.parse().ok()).with_context(|| format!("bad status line {status_line:?}"))?;
    let mut content_length = None;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { bail!("bad header line {line:?}") };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length = Some(value.parse::<usize>().with_context(|| format!("bad content-length {value:?}"))?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") && value.to_ascii_lowercase().contains("chunked") {
            chunked = true;
        }
    }
    let rest = &raw[head_end + 4..];
    let body = if chunked {
        dechunk(rest)?
    } else if let Some(n) = content_length {
        if rest.len() < n {
            bail!("body is {} bytes, content-length says {n}", rest.len());
        }
        rest[..n].to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Response { status, body: String::from_utf8(body).context("body is not utf-8")? })
}

fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n").context("chunk size line not terminated")?;
        let size_text = std::str::from_utf8(&rest[..line_end]).context("chunk size is not utf-8")?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).with_context(|| format!("bad chunk size {size_text:?}"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if rest.len() < size + 2 {
            bail!("chunk of {size} bytes is cut short");
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

/// The samples of a Prometheus text exposition without labels: name → value. Values that
/// are not numbers, and labelled samples, are skipped: the node's gauges are plain.
pub fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let name = it.next()?;
            let value: f64 = it.next()?.parse().ok()?;
            (!name.contains('{')).then(|| (name.to_string(), value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_length_chunked_and_close_delimited_bodies() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello").expect("length");
        assert_eq!(r, Response { status: 200, body: "hello".into() });
        let r = parse_response(b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nno \r\n6\r\nleader\r\n0\r\n\r\n")
            .expect("chunked");
        assert_eq!(r, Response { status: 503, body: "no leader".into() });
        let r = parse_response(b"HTTP/1.0 200 OK\r\n\r\nrest").expect("close");
        assert_eq!(r.body, "rest");
        assert!(parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nshort").is_err());
        assert!(parse_response(b"garbage").is_err());
    }

    #[test]
    fn reads_plain_gauges() {
        let m = parse_metrics(
            "# HELP veritrace_height h\n# TYPE veritrace_height gauge\nveritrace_height 42\nx{a=\"b\"} 1\nveritrace_is_leader 1\nbad nan-ish\n",
        );
        assert_eq!(m.get("veritrace_height"), Some(&42.0));
        assert_eq!(m.get("veritrace_is_leader"), Some(&1.0));
        assert!(!m.contains_key("x{a=\"b\"}") && !m.contains_key("bad"));
    }

    #[test]
    fn get_talks_to_a_real_socket() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        let server = std::thread::spawn(move || {
            let (mut s, _) = l.accept().expect("accept");
            let mut buf = [0u8; 1024];
            let n = s.read(&mut buf).expect("read");
            assert!(buf[..n].starts_with(b"GET /metrics HTTP/1.1\r\n"));
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 18\r\n\r\nveritrace_height 7").expect("write");
        });
        let r = get(addr, "/metrics").expect("get");
        server.join().expect("server");
        assert_eq!(parse_metrics(&r.body).get("veritrace_height"), Some(&7.0));
    }
}
