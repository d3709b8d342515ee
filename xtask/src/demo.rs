//! `cargo xtask demo`: a sample status application plus the host configured for it.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;

/// Serves the seed's status application on `listener`: `/` counts a request, `/status`
/// answers after `delay` with the seed's JSON document.
pub async fn sample_status_app(listener: tokio::net::TcpListener, delay: Duration) {
    let started = Instant::now();
    let hits = Arc::new(AtomicU64::new(0));
    let h = Arc::clone(&hits);
    let app = Router::new()
        .route(
            "/",
            get(move || {
                let n = h.fetch_add(1, Ordering::Relaxed) + 1;
                async move { format!("Hello, visitor number {n}\n") }
            }),
        )
        .route(
            "/status",
            get(move || {
                let hits = Arc::clone(&hits);
                async move {
                    tokio::time::sleep(delay).await;
                    let doc = serde_json::json!({
                        "current_requests": hits.load(Ordering::Relaxed),
                        "pending_requests": 0,
                        "total_uptime": started.elapsed().as_secs_f64(),
                        "health": "healthy",
                    });
                    ([("content-type", "application/json")], doc.to_string())
                }
            }),
        );
    if let Err(e) = axum::serve(listener, app).await {
        eprintln!("xtask: sample status app stopped: {e}");
    }
}

/// The sample upstreams of every collector but icos-push, and the collector tables that read
/// them; what it started stops when it is dropped.
pub(crate) struct Upstreams {
    /// `[collectors.*]` tables for app-status, ifcb and sensor-bridge.
    pub tables: String,
    /// The sample status application.
    pub app_addr: std::net::SocketAddr,
    /// The IFCB dashboard's URL.
    pub dashboard_url: String,
    /// The boards' URLs (the last one resets every connection).
    pub board_urls: Vec<String>,
    /// The sysfs tree.
    pub sysfs: std::path::PathBuf,
    /// mosquitto's port, when it is installed.
    pub mqtt_port: Option<u16>,
    _dashboard: tidegauge_testkit::ifcb::FakeDashboard,
    _boards: Vec<tidegauge_testkit::board::BoardEmulator>,
    _broker: Option<crate::bench::Host>,
}

/// Starts the sample upstreams on `rt` (files under `dir`): a status application, an IFCB
/// dashboard (a live mooring, a finished cruise, an empty dataset), three SDK boards (one
/// failing), the fake sysfs tree, and with mosquitto a broker and a device publishing to it.
pub(crate) fn start_upstreams(
    rt: &tokio::runtime::Runtime,
    dir: &std::path::Path,
) -> Result<Upstreams, String> {
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .map_err(|e| format!("cannot bind the sample app: {e}"))?;
    let app_addr = listener.local_addr().map_err(|e| e.to_string())?;
    rt.spawn(sample_status_app(listener, Duration::ZERO));

    use tidegauge_testkit::ifcb::{FakeDashboard, FakeDataset, Model};
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs() as i64;
    let mut model = Model::new(now);
    model
        .datasets
        .insert("mvco".into(), FakeDataset::regular(960, now - 600));
    model.datasets.insert(
        "cruise-2025".into(),
        FakeDataset::regular(500, now - 90 * 86_400),
    );
    model.datasets.insert(
        "new-site".into(),
        FakeDataset {
            active: true,
            ..FakeDataset::default()
        },
    );
    let dashboard = rt
        .block_on(FakeDashboard::start(model))
        .map_err(|e| format!("cannot start the sample dashboard: {e}"))?;

    use tidegauge_testkit::board::{BoardEmulator, Mode};
    let boards: Vec<BoardEmulator> = (0..3)
        .map(|_| rt.block_on(BoardEmulator::start()))
        .collect();
    boards[2].set_mode(Mode::Reset);
    let sysfs = crate::root().join("fixtures/sensor-bridge/sysfs");
    let board_tables: String = ["greenhouse", "shed", "flaky"]
        .iter()
        .zip(&boards)
        .map(|(name, b)| {
            format!(
                "[[collectors.sensor-bridge.boards]]\nname = \"{name}\"\nurl = \"{}\"\n\
                 map = [{{ series = \"prom_express_pressure\", quantity = \"pressure\", unit = \"hectopascals\" }}]\n\n",
                b.url
            )
        })
        .collect();
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let (broker, mqtt_port) = match start_mosquitto(dir) {
        Some((broker, port)) => {
            rt.spawn(publish_readings(port));
            (Some(broker), Some(port))
        }
        None => (None, None),
    };
    let mqtt_table = mqtt_port.map_or(String::new(), |port| {
        format!(
            "[collectors.sensor-bridge.mqtt]\nbroker = \"mqtt://127.0.0.1:{port}\"\n\n\
             [[collectors.sensor-bridge.mqtt.subscriptions]]\ntopic = \"devices/home/+\"\n\
             fields.temperature = {{ quantity = \"temperature\", unit = \"celsius\" }}\n\
             fields.humidity = {{ quantity = \"humidity\", unit = \"percent\" }}\n\n"
        )
    });
    let tables = format!(
        "[collectors.app-status]\nmin_interval = \"1s\"\n\n\
         [[collectors.app-status.targets]]\nname = \"sample\"\nurl = \"http://{app_addr}/status\"\n\n\
         [collectors.ifcb]\ninterval = \"1m\"\n\n\
         [[collectors.ifcb.dashboards]]\nname = \"sample\"\nurl = \"{}\"\n\n\
         [collectors.sensor-bridge]\nsysfs = {:?}\n\n\
         [collectors.sensor-bridge.iio.devices.\"1-0040\"]\nchip = \"si7021\"\n\n{board_tables}{mqtt_table}",
        dashboard.url,
        sysfs.display().to_string(),
    );
    Ok(Upstreams {
        tables,
        app_addr,
        dashboard_url: dashboard.url.clone(),
        board_urls: boards.iter().map(|b| b.url.clone()).collect(),
        sysfs,
        mqtt_port,
        _dashboard: dashboard,
        _boards: boards,
        _broker: broker,
    })
}

pub fn run() -> Result<(), String> {
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    let dir = crate::root().join("target/demo");
    let up = start_upstreams(&rt, &dir)?;
    let app_addr = up.app_addr;
    match up.mqtt_port {
        Some(port) => eprintln!(
            "xtask: mosquitto on 127.0.0.1:{port}, a device publishing to devices/home/livingroom every 5 s"
        ),
        None => eprintln!(
            "xtask: mosquitto is not installed: the demo runs without MQTT (scripts/install-test-deps.sh installs it)"
        ),
    }
    let cfg = dir.join("tidegauge.toml");
    std::fs::write(
        &cfg,
        format!(
            "# Written by `cargo xtask demo`.\n\
             [web]\nlisten_addresses = [\"127.0.0.1:9877\"]\n\n{}\
             [collectors.icos-push]\ndata_dir = {:?}\n",
            up.tables,
            dir.join("data").display().to_string()
        ),
    )
    .map_err(|e| e.to_string())?;
    eprintln!(
        "xtask: sample status application on http://{app_addr}/status (visit http://{app_addr}/ to count requests)"
    );
    eprintln!("xtask: sample IFCB dashboard on {}", up.dashboard_url);
    eprintln!(
        "xtask: emulated sensor boards on {} (the last one resets every connection) and a fake sysfs tree in {}",
        up.board_urls.join(", "),
        up.sysfs.display()
    );
    eprintln!(
        "xtask: tidegauge on http://127.0.0.1:9877/ with {}",
        cfg.display()
    );
    eprintln!(
        "xtask: try  curl -s http://127.0.0.1:9877/metrics  and  curl -s 'http://127.0.0.1:9877/probe?target=http://{app_addr}/status'"
    );
    eprintln!(
        "xtask: and pushes:  curl -X PUT --data-binary 'demo_pushed 1' http://127.0.0.1:9877/metrics/job/demo"
    );
    eprintln!("xtask: Ctrl-C stops both");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    crate::run(
        Command::new(cargo)
            .args(["run", "--release", "-p", "tidegauge", "--", "--config"])
            .arg(&cfg),
    )
}

/// mosquitto on a free loopback port, when installed: the process (killed on drop) and the port.
fn start_mosquitto(dir: &std::path::Path) -> Option<(crate::bench::Host, u16)> {
    let bin = ["/usr/sbin/mosquitto", "mosquitto"]
        .into_iter()
        .find(|b| std::path::Path::new(b).is_file() || crate::has(b))?;
    let port = crate::bench::free_port().ok()?;
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"),
    )
    .ok()?;
    let child = Command::new(bin)
        .arg("-c")
        .arg(&conf)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    Some((crate::bench::Host(child), port))
}

/// A device publishing a reading every 5 s, reconnecting as needed.
async fn publish_readings(port: u16) {
    let mut o = rumqttc::MqttOptions::new("tidegauge-demo-device", "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30));
    let (client, mut events) = rumqttc::AsyncClient::new(o, 16);
    tokio::spawn(async move {
        loop {
            if events.poll().await.is_err() {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    });
    let mut n = 0u64;
    loop {
        let t = 21.0 + (n % 10) as f64 / 10.0;
        let payload = format!("{{\"temperature\": {t:.1}, \"humidity\": 48.5}}");
        let _ = client
            .publish(
                "devices/home/livingroom",
                rumqttc::QoS::AtMostOnce,
                false,
                payload,
            )
            .await;
        n += 1;
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}
