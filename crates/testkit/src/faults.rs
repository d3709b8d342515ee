//! An upstream that misbehaves on purpose, at the TCP level where it must: every request it
//! accepts gets the same [`Fault`]. For fault-matrix tests of collectors that call upstreams.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How the upstream answers every request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Accepts the connection, reads the request, never answers.
    NoAnswer,
    /// Answers 200 with a declared body sent one byte a second.
    SlowDrip,
    /// Sends the headers and part of the body, then resets the connection.
    ResetMidBody,
    /// Answers 500.
    Http500,
    /// Answers 200 with an HTML page where JSON is expected.
    Html,
    /// Answers 200 with JSON cut short.
    TruncatedJson,
    /// Answers 200 with a 50 MB body (no `Content-Length`: the limit must hold while streaming).
    HugeBody,
    /// Nothing listens on the port.
    Refused,
    /// Answers 302 to itself, forever.
    RedirectLoop,
    /// A host name that does not resolve (`*.invalid`, refused by the tests' resolver without a
    /// DNS query).
    UnknownHost,
}

impl Fault {
    /// Every fault, in table order.
    pub const ALL: [Fault; 10] = [
        Fault::NoAnswer,
        Fault::SlowDrip,
        Fault::ResetMidBody,
        Fault::Http500,
        Fault::Html,
        Fault::TruncatedJson,
        Fault::HugeBody,
        Fault::Refused,
        Fault::RedirectLoop,
        Fault::UnknownHost,
    ];
}

/// A running faulty upstream; stops when dropped.
#[derive(Debug)]
pub struct FaultServer {
    /// Base URL, `http://127.0.0.1:PORT` (a name that does not resolve for `UnknownHost`).
    pub url: String,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

impl FaultServer {
    /// Starts an upstream with `fault` on an ephemeral loopback port.
    pub async fn start(fault: Fault) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        if fault == Fault::UnknownHost {
            return Ok(Self {
                url: "http://no-such-host.invalid:9".to_owned(),
                task: None,
            });
        }
        if fault == Fault::Refused {
            // The port was free a moment ago and nobody listens on it now.
            drop(listener);
            return Ok(Self { url, task: None });
        }
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(answer(stream, fault));
            }
        });
        Ok(Self {
            url,
            task: Some(task),
        })
    }
}

/// Reads one request's head (the collectors under test send no bodies that matter here).
async fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 || buf.len() > 64 * 1024 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    head.lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .map(str::to_owned)
}

async fn answer(mut stream: TcpStream, fault: Fault) {
    let Some(path) = read_head(&mut stream).await else {
        return;
    };
    let head = |status: &str, kind: &str, len: Option<usize>| {
        let len = len.map_or_else(String::new, |n| format!("Content-Length: {n}\r\n"));
        format!("HTTP/1.1 {status}\r\nContent-Type: {kind}\r\n{len}Connection: close\r\n\r\n")
    };
    let _ = match fault {
        Fault::NoAnswer | Fault::Refused | Fault::UnknownHost => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(())
        }
        Fault::SlowDrip => {
            let mut r = stream
                .write_all(head("200 OK", "application/json", Some(1000)).as_bytes())
                .await;
            for _ in 0..1000 {
                if r.is_err() {
                    break;
                }
                r = stream.write_all(b" ").await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            r
        }
        Fault::ResetMidBody => {
            let r = stream
                .write_all(
                    format!(
                        "{}{{\"current_requests\": 1, \"pen",
                        head("200 OK", "application/json", Some(1000))
                    )
                    .as_bytes(),
                )
                .await;
            // Linger 0: dropping the socket sends a reset, not an orderly close. (Deprecated
            // because a non-zero linger blocks on drop; zero does not.)
            #[allow(deprecated)]
            let _ = stream.set_linger(Some(Duration::ZERO));
            r
        }
        Fault::Http500 => {
            let body = "internal error";
            stream
                .write_all(
                    format!("{}{body}", head("500 Internal Server Error", "text/plain", Some(body.len())))
                        .as_bytes(),
                )
                .await
        }
        Fault::Html => {
            let body = "<!DOCTYPE html><html><body><h1>Login</h1></body></html>";
            stream
                .write_all(format!("{}{body}", head("200 OK", "text/html", Some(body.len()))).as_bytes())
                .await
        }
        Fault::TruncatedJson => {
            let body = "{\"current_requests\": 10, \"pending_requests\": [1, 2";
            stream
                .write_all(
                    format!("{}{body}", head("200 OK", "application/json", Some(body.len())))
                        .as_bytes(),
                )
                .await
        }
        Fault::HugeBody => {
            let mut r = stream
                .write_all(head("200 OK", "application/json", None).as_bytes())
                .await;
            let block = vec![b' '; 1024 * 1024];
            for _ in 0..50 {
                if r.is_err() {
                    break;
                }
                r = stream.write_all(&block).await;
            }
            r
        }
        Fault::RedirectLoop => {
            stream
                .write_all(
                    format!(
                        "HTTP/1.1 302 Found\r\nLocation: {path}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    )
                    .as_bytes(),
                )
                .await
        }
    };
    let _ = stream.shutdown().await;
}
