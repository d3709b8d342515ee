//! Boards running the real prometheus_express SDK (PyPI 0.0.4) on CPython, with the reference
//! firmware's loop (`fixtures/sensor-bridge/sdk-board.py`), scraped through the bridge.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tidegauge_core::Collector;
use tidegauge_sensor_bridge::{Config, SensorBridge};
use tidegauge_testkit::{FIXTURE_EPOCH, FakeClock, context, fixtures_dir, render};

struct Board(Child);

impl Drop for Board {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_board() -> (Board, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new("python3")
        .arg(fixtures_dir().join("sensor-bridge/sdk-board.py"))
        .arg(port.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(
        line.trim(),
        "ready",
        "the SDK board did not start (is prometheus_express installed? run scripts/install-test-deps.sh)"
    );
    // The SDK prints every connection; a closed pipe would make its prints fail.
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    (Board(child), port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boards_on_the_real_sdk() {
    let boards: Vec<(Board, u16)> = (0..3).map(|_| start_board()).collect();
    let mut toml = String::from("[iio]\nenabled = false\n[hwmon]\nenabled = false\n");
    for (i, (_, port)) in boards.iter().enumerate() {
        toml.push_str(&format!(
            "[[boards]]\nname = \"b{i}\"\nurl = \"http://127.0.0.1:{port}\"\nmin_interval = 0\n\
             map = [{{ series = \"prom_express_temperature\", quantity = \"temperature\", unit = \"celsius\" }}]\n"
        ));
    }
    let c = SensorBridge::new(toml::from_str::<Config>(&toml).unwrap()).unwrap();
    let ctx = || context(Duration::from_secs(5), FakeClock::at(FIXTURE_EPOCH));
    let first = render(&c.collect(&ctx()).await.unwrap());
    let second = render(&c.collect(&ctx()).await.unwrap());
    for i in 0..3 {
        for line in [
            format!("sensor_board_up{{board=\"b{i}\"}} 1"),
            format!("prom_express_gas{{board=\"b{i}\"}} 1060948"),
            format!("prom_express_humidity{{sensor=\"si7021\",board=\"b{i}\"}} 49.7976"),
            format!("prom_express_heartbeat{{board=\"b{i}\"}} "),
            format!("prom_express_loop_count{{board=\"b{i}\"}} "),
            format!("prom_express_loop_sum{{board=\"b{i}\"}} "),
            format!(
                "sensor_temperature_celsius{{source=\"board\",device=\"b{i}\",chip=\"bme680\",sensor=\"temperature\"}} 24.7"
            ),
        ] {
            assert!(second.contains(&line), "{line} missing from\n{second}");
        }
    }
    assert!(!second.contains("None"), "{second}");
    assert!(!second.contains("sensor_read_errors"), "{second}");
    // Each scrape was a new request: the heartbeat moved on.
    assert_ne!(
        first
            .lines()
            .find(|l| l.starts_with("prom_express_heartbeat{board=\"b0\"}")),
        second
            .lines()
            .find(|l| l.starts_with("prom_express_heartbeat{board=\"b0\"}"))
    );
}
