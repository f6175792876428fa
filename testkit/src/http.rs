//! A bare HTTP/1.1 GET over a plain TCP connection, for the endpoints the tests probe (health,
//! readiness, metrics) the way a kubelet or a scraper does: one request, the whole answer.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A loopback port free at the time of asking, for a server a test starts (which binds it a
/// moment later; another process may take it in between, so servers that can are told port 0).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port").local_addr().expect("its address").port()
}

/// What a GET was answered.
#[derive(Debug, Clone)]
pub struct HttpAnswer {
    pub status: u16,
    /// The status line and headers, as sent.
    pub head: String,
    pub body: String,
}

impl HttpAnswer {
    /// The value of header `name` (any case), if sent.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// GET `url` (`http://host:port/path`) with `headers`; `None` when nothing answers.
pub async fn http_get(url: &str, headers: &[(&str, &str)]) -> Option<HttpAnswer> {
    let rest = url.strip_prefix("http://")?;
    let (addr, path) = rest.split_once('/').map(|(a, p)| (a, format!("/{p}"))).unwrap_or((rest, "/".into()));
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    let extra: String = headers.iter().map(|(n, v)| format!("{n}: {v}\r\n")).collect();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n").as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text.as_str(), ""));
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some(HttpAnswer { status, head: head.to_string(), body: body.to_string() })
}
