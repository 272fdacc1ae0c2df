//! A minimal HTTP/1.1 server side: request parsing (Content-Length and
//! chunked bodies, `Expect: 100-continue`) and response writing.

use std::io::{self, BufRead, Read, Write};

/// Largest accepted header section.
const MAX_HEADER_BYTES: u64 = 64 * 1024;
/// Largest accepted body (the real API server's limit is 3 MiB).
pub(crate) const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// One parsed request.
#[derive(Debug)]
pub(crate) struct Request {
    pub method: String,
    /// Raw (still percent-encoded) path.
    pub path: String,
    /// Raw query string without the `?`.
    pub query: String,
    /// `true` for HTTP/1.1, `false` for HTTP/1.0.
    pub http11: bool,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// First header with this (lower-case) name.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether the connection should be closed after the response.
    pub(crate) fn wants_close(&self) -> bool {
        let conn = self
            .header("connection")
            .map(|v| v.to_ascii_lowercase())
            .unwrap_or_default();
        let tokens: Vec<&str> = conn.split(',').map(str::trim).collect();
        if self.http11 {
            tokens.contains(&"close")
        } else {
            !tokens.contains(&"keep-alive")
        }
    }
}

/// Why no request could be read.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The peer closed the connection cleanly between requests.
    Closed,
    /// Socket error or timeout.
    Io,
    /// Syntax error: answer 400 and close.
    Bad(String),
    /// Body too large: answer 413 and close.
    TooLarge,
}

impl From<io::Error> for ReadError {
    fn from(_: io::Error) -> Self {
        ReadError::Io
    }
}

/// Read one CRLF (or LF) terminated line of at most `limit` bytes.
fn read_line<R: BufRead>(r: &mut R, limit: u64) -> Result<Option<String>, ReadError> {
    let mut buf = Vec::new();
    let n = r.by_ref().take(limit).read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') {
        return Err(ReadError::Bad("header line too long or truncated".into()));
    }
    buf.pop();
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    String::from_utf8(buf)
        .map(Some)
        .map_err(|_| ReadError::Bad("non UTF-8 header".into()))
}

/// Read one request. `w` is used to send `100 Continue` when asked.
pub(crate) fn read_request<R: BufRead, W: Write>(
    r: &mut R,
    w: &mut W,
) -> Result<Request, ReadError> {
    // Skip empty lines between requests (RFC 9112 2.2).
    let line = loop {
        match read_line(r, MAX_HEADER_BYTES)? {
            None => return Err(ReadError::Closed),
            Some(l) if l.is_empty() => continue,
            Some(l) => break l,
        }
    };
    let mut parts = line.split(' ');
    let (method, target, version) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(t), Some(v), None) if !m.is_empty() && !t.is_empty() => (m, t, v),
        _ => return Err(ReadError::Bad(format!("malformed request line {line:?}"))),
    };
    let http11 = match version {
        "HTTP/1.1" => true,
        "HTTP/1.0" => false,
        _ => return Err(ReadError::Bad(format!("unsupported version {version:?}"))),
    };
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (target.to_string(), String::new()),
    };
    if !path.starts_with('/') {
        return Err(ReadError::Bad(format!(
            "unsupported request target {target:?}"
        )));
    }
    let mut headers = Vec::new();
    let mut total = 0u64;
    loop {
        let line = read_line(r, MAX_HEADER_BYTES)?
            .ok_or_else(|| ReadError::Bad("connection closed inside headers".into()))?;
        if line.is_empty() {
            break;
        }
        total += line.len() as u64;
        if total > MAX_HEADER_BYTES {
            return Err(ReadError::Bad("headers too large".into()));
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| ReadError::Bad(format!("malformed header {line:?}")))?;
        if name.is_empty() || name.contains(' ') {
            return Err(ReadError::Bad(format!("malformed header {line:?}")));
        }
        headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
    }
    let mut req = Request {
        method: method.to_string(),
        path,
        query,
        http11,
        headers,
        body: Vec::new(),
    };
    let chunked = match req.header("transfer-encoding") {
        None => false,
        Some(te) if te.eq_ignore_ascii_case("chunked") => true,
        Some(te) => {
            return Err(ReadError::Bad(format!(
                "unsupported transfer-encoding {te:?}"
            )))
        }
    };
    let length = match req.header("content-length") {
        _ if chunked => None,
        None => None,
        Some(v) => Some(
            v.parse::<usize>()
                .map_err(|_| ReadError::Bad(format!("bad content-length {v:?}")))?,
        ),
    };
    if length.is_some_and(|n| n > MAX_BODY_BYTES) {
        return Err(ReadError::TooLarge);
    }
    let has_body = chunked || length.is_some_and(|n| n > 0);
    if has_body
        && req
            .header("expect")
            .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"))
    {
        w.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        w.flush()?;
    }
    if chunked {
        req.body = read_chunked(r)?;
    } else if let Some(n) = length {
        let mut body = vec![0; n];
        r.read_exact(&mut body)?;
        req.body = body;
    }
    Ok(req)
}

fn read_chunked<R: BufRead>(r: &mut R) -> Result<Vec<u8>, ReadError> {
    let mut body = Vec::new();
    loop {
        let line =
            read_line(r, 1024)?.ok_or_else(|| ReadError::Bad("truncated chunked body".into()))?;
        let size_str = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_str, 16)
            .map_err(|_| ReadError::Bad(format!("bad chunk size {line:?}")))?;
        if size == 0 {
            // Trailers, then the final empty line.
            loop {
                let t = read_line(r, MAX_HEADER_BYTES)?
                    .ok_or_else(|| ReadError::Bad("truncated chunked trailer".into()))?;
                if t.is_empty() {
                    return Ok(body);
                }
            }
        }
        if body.len() + size > MAX_BODY_BYTES {
            return Err(ReadError::TooLarge);
        }
        let start = body.len();
        body.resize(start + size, 0);
        r.read_exact(&mut body[start..])?;
        let end = read_line(r, 2)?;
        if end.as_deref() != Some("") {
            return Err(ReadError::Bad("chunk not followed by CRLF".into()));
        }
    }
}

/// A response to send.
#[derive(Debug, Clone)]
pub(crate) struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// A JSON response.
    pub(crate) fn json(status: u16, value: &serde_json::Value) -> Self {
        Response {
            status,
            content_type: "application/json",
            headers: Vec::new(),
            body: serde_json::to_vec(value).expect("serializing a Value cannot fail"),
        }
    }

    /// A plain-text response.
    pub(crate) fn text(status: u16, text: &str) -> Self {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            headers: Vec::new(),
            body: text.as_bytes().to_vec(),
        }
    }
}

/// Standard reason phrase for the status codes this server uses.
pub(crate) fn reason_phrase(code: u16) -> &'static str {
    match code {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        409 => "Conflict",
        410 => "Gone",
        413 => "Payload Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// Write `resp`; `close` adds `Connection: close`. `head` omits the body.
pub(crate) fn write_response<W: Write>(
    w: &mut W,
    resp: &Response,
    close: bool,
    head: bool,
) -> io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-cache, private\r\n",
        resp.status,
        reason_phrase(resp.status),
        resp.content_type,
        resp.body.len()
    );
    for (n, v) in &resp.headers {
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    if close {
        out.push_str("Connection: close\r\n");
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    if !head {
        bytes.extend_from_slice(&resp.body);
    }
    w.write_all(&bytes)?;
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufReader;

    fn parse(raw: &str) -> Result<Request, ReadError> {
        let mut r = BufReader::new(raw.as_bytes());
        let mut w = Vec::new();
        read_request(&mut r, &mut w)
    }

    #[test]
    fn chunked_body_with_trailer() {
        let req = parse(
            "POST /x?a=b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-T: 1\r\n\r\n",
        )
        .unwrap();
        assert_eq!(req.body, b"abcde");
        assert_eq!(req.query, "a=b");
    }

    #[test]
    fn bad_request_line() {
        assert!(matches!(parse("GARBAGE\r\n\r\n"), Err(ReadError::Bad(_))));
        assert!(matches!(parse(""), Err(ReadError::Closed)));
    }

    #[test]
    fn connection_semantics() {
        let r = parse("GET / HTTP/1.0\r\n\r\n").unwrap();
        assert!(r.wants_close());
        let r = parse("GET / HTTP/1.1\r\nConnection: Close\r\n\r\n").unwrap();
        assert!(r.wants_close());
        let r = parse("GET / HTTP/1.1\r\n\r\n").unwrap();
        assert!(!r.wants_close());
    }
}
