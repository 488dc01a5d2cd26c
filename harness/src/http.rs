//! Loopback ports and a minimal HTTP/1.1 client (enough for /metrics and the simulators).
use std::io::{Read, Write};
use std::time::Duration;

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a loopback port")
}

/// Minimal HTTP/1.1 GET on loopback.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    http_get_result(port, path).ok()
}

/// Like [`http_get`], with the reason when there is no body (connection refused, timeout, a
/// response that is not HTTP).
pub fn http_get_result(port: u16, path: &str) -> Result<String, String> {
    http_request(port, "GET", path, &[], None).map(|(_, body)| body)
}

/// One HTTP/1.1 request to `127.0.0.1:port` with extra `headers` and an optional JSON `body`;
/// the status code and the body.
pub fn http_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Result<(u16, String), String> {
    let mut stream =
        std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(body) = body {
        request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    request.push_str("\r\n");
    request.push_str(body.unwrap_or_default());
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| format!("read: {e}"))?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("not an HTTP response: {response:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("no status line: {head:?}"))?;
    Ok((status, body.to_owned()))
}

/// The port of a loopback base URL such as `http://127.0.0.1:18089`.
pub fn port_of(base_url: &str) -> Option<u16> {
    base_url
        .rsplit(':')
        .next()?
        .trim_end_matches('/')
        .parse()
        .ok()
}
