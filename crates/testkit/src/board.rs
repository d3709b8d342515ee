//! An emulated microcontroller board running the prometheus_express SDK (spec `sensor-bridge.md`
//! §1, §5.7): a listen backlog of 2, one connection served at a time, `Connection: close`, no
//! trailing newline, families in a different order on every request, a raw `"` in a label value,
//! a summary's sum called `_total`, a counter that goes down, and on demand resets, hangs and
//! empty replies. It records every request and the most connections it ever had open at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How the board answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The SDK's answer (or the body set with [`BoardEmulator::set_body`]).
    Serve,
    /// Resets the connection after reading the request.
    Reset,
    /// Reads the request and never answers.
    Hang,
    /// Closes the connection without a byte.
    Empty,
}

#[derive(Debug)]
struct Shared {
    mode: Mutex<Mode>,
    body: Mutex<Option<String>>,
    delay: Mutex<Duration>,
    requests: Mutex<Vec<(Instant, Vec<u8>)>>,
    open: AtomicUsize,
    max_open: AtomicUsize,
    /// The SDK serves one connection at a time.
    serving: tokio::sync::Mutex<()>,
}

/// A running board; stops when dropped.
#[derive(Debug)]
pub struct BoardEmulator {
    /// `http://127.0.0.1:PORT/metrics`.
    pub url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for BoardEmulator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl BoardEmulator {
    /// A board serving the SDK's answer on a free loopback port.
    pub async fn start() -> Self {
        let socket = tokio::net::TcpSocket::new_v4().unwrap_or_else(|e| panic!("socket: {e}"));
        socket
            .bind(([127, 0, 0, 1], 0).into())
            .unwrap_or_else(|e| panic!("bind: {e}"));
        let listener = socket.listen(2).unwrap_or_else(|e| panic!("listen: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("local_addr: {e}"));
        let shared = Arc::new(Shared {
            mode: Mutex::new(Mode::Serve),
            body: Mutex::new(None),
            delay: Mutex::new(Duration::ZERO),
            requests: Mutex::new(Vec::new()),
            open: AtomicUsize::new(0),
            max_open: AtomicUsize::new(0),
            serving: tokio::sync::Mutex::new(()),
        });
        let s = Arc::clone(&shared);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let now_open = s.open.fetch_add(1, Ordering::SeqCst) + 1;
                s.max_open.fetch_max(now_open, Ordering::SeqCst);
                let s = Arc::clone(&s);
                tokio::spawn(async move {
                    let _one_at_a_time = s.serving.lock().await;
                    serve(&s, stream).await;
                    s.open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Self {
            url: format!("http://{addr}/metrics"),
            shared,
            task,
        }
    }

    /// Changes how the board answers from the next request on.
    pub fn set_mode(&self, mode: Mode) {
        *lock(&self.shared.mode) = mode;
    }

    /// Serves `body` (as is) instead of the SDK's answer; `None` goes back to it.
    pub fn set_body(&self, body: Option<String>) {
        *lock(&self.shared.body) = body;
    }

    /// Waits this long after reading a request before answering.
    pub fn set_delay(&self, delay: Duration) {
        *lock(&self.shared.delay) = delay;
    }

    /// Requests received so far.
    pub fn requests(&self) -> usize {
        lock(&self.shared.requests).len()
    }

    /// Every request received: when, and its bytes.
    pub fn received(&self) -> Vec<(Instant, Vec<u8>)> {
        lock(&self.shared.requests).clone()
    }

    /// The most connections the board ever had open at once.
    pub fn max_open(&self) -> usize {
        self.shared.max_open.load(Ordering::SeqCst)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The reference firmware's answer to its `n`-th request (from 0): the families of spec §1.5,
/// rotated by `n`, without a final newline.
pub fn sdk_body(n: usize) -> String {
    let mut families = [
        "# HELP prom_express_gas gas resistance\n# TYPE prom_express_gas gauge\nprom_express_gas 1060948".to_owned(),
        "# HELP prom_express_humidity humidity\n# TYPE prom_express_humidity gauge\nprom_express_humidity{sensor=\"None\"} 0\nprom_express_humidity{sensor=\"bme680\"} 49.4062\nprom_express_humidity{sensor=\"si7021\"} 49.7976".to_owned(),
        "# HELP prom_express_pressure pressure\n# TYPE prom_express_pressure gauge\nprom_express_pressure 983.25".to_owned(),
        "# HELP prom_express_temperature temperature\n# TYPE prom_express_temperature gauge\nprom_express_temperature{sensor=\"None\"} 0\nprom_express_temperature{sensor=\"bme680\"} 24.7359\nprom_express_temperature{sensor=\"si7021\"} 24.3325".to_owned(),
        format!(
            "# HELP prom_express_loop main loop passes\n# TYPE prom_express_loop summary\nprom_express_loop_count {}\nprom_express_loop_total {}",
            n + 1,
            (n + 1) as f64 * 0.25
        ),
        format!(
            "# HELP prom_express_heartbeat heartbeats\n# TYPE prom_express_heartbeat counter\nprom_express_heartbeat {}",
            1000 - n.min(1000)
        ),
        "# HELP prom_express_site where the board is\n# TYPE prom_express_site gauge\nprom_express_site{place=\"None\"} 0\nprom_express_site{place=\"shed \"north\"\"} 1".to_owned(),
    ];
    let len = families.len();
    families.rotate_left(n % len);
    families.join("\n")
}

async fn serve(s: &Shared, mut stream: TcpStream) {
    // The SDK reads the request with a single 1024-byte `recv`.
    let mut buf = vec![0u8; 1024];
    let mut len = 0;
    while len < buf.len() && !buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf[len..]).await {
            Ok(0) | Err(_) => break,
            Ok(n) => len += n,
        }
    }
    buf.truncate(len);
    let n = {
        let mut r = lock(&s.requests);
        r.push((Instant::now(), buf.clone()));
        r.len() - 1
    };
    let mode = *lock(&s.mode);
    let delay = *lock(&s.delay);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let line = String::from_utf8_lossy(&buf);
    let line = line.lines().next().unwrap_or_default();
    match mode {
        Mode::Reset => {
            // A zero linger turns the close into a reset, as a crashing board's stack sends.
            #[allow(deprecated)]
            let _ = stream.set_linger(Some(Duration::ZERO));
            return;
        }
        Mode::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return;
        }
        Mode::Empty => return,
        Mode::Serve => {}
    }
    let (status, body) = if line.starts_with("GET /metrics ") && line.ends_with(" HTTP/1.1") {
        let body = lock(&s.body).clone().unwrap_or_else(|| sdk_body(n));
        ("200 OK", body)
    } else {
        ("404 Not Found", "Not Found".to_owned())
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body.as_bytes()).await;
    let _ = stream.shutdown().await;
}
