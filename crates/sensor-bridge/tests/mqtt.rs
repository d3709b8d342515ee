//! MQTT: the messages of spec §5.7 fed to the ingest function, then a real mosquitto broker.
#![allow(clippy::unwrap_used)]

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tidegauge_core::{CancellationToken, Collector};
use tidegauge_sensor_bridge::{Config, SensorBridge};
use tidegauge_testkit::{FIXTURE_EPOCH, FakeClock, context, render};
use tokio::time::Instant;

const SUBSCRIPTIONS: &str = r#"
[[mqtt.subscriptions]]
topic = "devices/home/+"
fields.temperature = { quantity = "temperature", unit = "celsius" }
fields.humidity = { quantity = "humidity", unit = "percent" }
fields."computed.heat_index" = { metric = "heat_index_celsius", help = "Heat index." }

[[mqtt.subscriptions]]
topic = "switches/+/state"
device_regex = "^switches/(?P<device>[^/]+)/state$"
expire_after = "never"
fields.state = { metric = "switch_on", help = "1 when the switch is on." }
fields.value = { metric = "switch_on", help = "1 when the switch is on." }

[[mqtt.subscriptions]]
topic = "rtl_433/events"
device_field = "id"
labels = { model = "model" }
fields.t = { quantity = "temperature", unit = "celsius", chip = "rtl_433" }
fields.t2 = { metric = "station_temperature_celsius" }

[[mqtt.subscriptions]]
topic = "shellies/+/temps"
device_regex = "^shellies/(?P<device>[^/]+)/"
expire_after = "1m"
fields.t = { quantity = "temperature", unit = "celsius" }
"#;

fn bridge(broker: &str, extra: &str) -> SensorBridge {
    let toml = format!(
        "[iio]\nenabled = false\n[hwmon]\nenabled = false\n[mqtt]\nbroker = \"{broker}\"\n{extra}\n{SUBSCRIPTIONS}"
    );
    SensorBridge::new(toml::from_str::<Config>(&toml).unwrap()).unwrap()
}

async fn scrape(c: &SensorBridge) -> String {
    let ctx = context(Duration::from_secs(5), FakeClock::at(FIXTURE_EPOCH));
    render(&c.collect(&ctx).await.unwrap())
}

#[tokio::test]
async fn the_spec_messages() {
    let c = bridge("mqtt://127.0.0.1:1", "max_series = 10");
    let m = c.mqtt().unwrap();
    let now = Instant::now();
    let t = FIXTURE_EPOCH as f64;
    let feed = [
        (
            "devices/home/livingroom",
            r#"{"temperature":23.20,"humidity":51.60,"computed":{"heat_index":22.92}}"#,
            "success",
        ),
        ("switches/porch/state", r#"{"state":"ON"}"#, "success"),
        ("switches/shed/state", "OFF", "success"),
        (
            "rtl_433/events",
            r#"[{"id":1,"t":20.5,"t2":20.4,"model":"Acurite"},{"id":2,"t":21.0,"model":"Oregon"}]"#,
            "success",
        ),
        (
            "shellies/h1/temps",
            r#"{"0":{"t":20.1},"1":{"t":20.4}}"#,
            "success",
        ),
        ("devices/home/kitchen", "not json {", "decode_error"),
        ("devices/home/kitchen", r#"{"pressure": 1013}"#, "unmapped"),
        // The table holds 10 series: this device's temperature is one too many.
        ("devices/home/attic", r#"{"temperature": 30}"#, "rejected"),
    ];
    for (topic, payload, want) in feed {
        assert_eq!(
            m.ingest(topic, payload.as_bytes(), now, t),
            want,
            "{topic} {payload}"
        );
    }
    // The landing page: no broker connection (none is running), each device's last message.
    let shown = m.status(t + 12.0);
    assert_eq!(
        shown[0].rows[0].health,
        tidegauge_core::status::Health::Failing
    );
    assert_eq!(shown[0].rows[0].cells[1].to_string(), "disconnected");
    let devices: Vec<String> = shown[1]
        .rows
        .iter()
        .map(|r| format!("{} {}", r.cells[0], r.cells[1]))
        .collect();
    assert!(
        devices.contains(&"livingroom 12 s ago".to_owned()),
        "{devices:?}"
    );
    let out = scrape(&c).await;
    assert!(out.contains("device=\"h1/0\""), "{out}");
    insta::assert_snapshot!(out);
    // A minute later the shelly's readings expire; the switches never do.
    m.expire(now + Duration::from_secs(61));
    let out = scrape(&c).await;
    assert!(!out.contains("h1/0"), "{out}");
    assert!(out.contains("switch_on{device=\"porch\"} 1"), "{out}");
    m.expire(now + Duration::from_secs(301));
    let out = scrape(&c).await;
    assert!(!out.contains("livingroom"), "{out}");
    assert!(out.contains("switch_on{device=\"shed\"} 0"), "{out}");
    assert!(out.contains("sensor_mqtt_series 2"), "{out}");
}

#[tokio::test]
async fn what_a_hostile_device_sends_stays_bounded() {
    let toml = "[iio]\nenabled = false\n[hwmon]\nenabled = false\n[mqtt]\nbroker = \"mqtt://127.0.0.1:1\"\nmax_series = 10\n\
        [[mqtt.subscriptions]]\ntopic = \"d/+\"\ndevice_field = \"id\"\nlabels = { model = \"model\" }\nexport_unmapped = true\n\
        fields.t = { quantity = \"temperature\", unit = \"celsius\" }\nfields.s = { metric = \"m_s\" }";
    let c = SensorBridge::new(toml::from_str::<Config>(toml).unwrap()).unwrap();
    let m = c.mqtt().unwrap();
    let now = Instant::now();
    let long = "H".repeat(60_000);
    // Long ids from the topic or the payload are cut, and two of them stay two series.
    for end in ["1", "2"] {
        m.ingest(&format!("d/{long}{end}"), br#"{"t": 1}"#, now, 0.0);
        m.ingest(
            "d/x",
            format!(r#"{{"id": "{long}{end}", "t": 2}}"#).as_bytes(),
            now,
            0.0,
        );
    }
    // Long JSON keys, exported unmapped, are cut too; the id and label fields are not values.
    m.ingest(
        "d/k",
        format!(r#"{{"id": "k", "model": 7, "{long}": 3}}"#).as_bytes(),
        now,
        0.0,
    );
    // Non-finite strings are no readings; an empty id falls back to the topic's.
    assert_eq!(
        m.ingest("d/n", br#"{"t": "NaN", "s": "inf"}"#, now, 0.0),
        "unmapped"
    );
    m.ingest("d/e", br#"{"id": "", "t": 5}"#, now, 0.0);
    let out = scrape(&c).await;
    for line in out.lines().filter(|l| !l.starts_with('#')) {
        assert!(line.len() < 400, "{line}");
    }
    // The same two ids from the topic and from the payload: two devices, and `e`.
    assert_eq!(
        out.matches("sensor_temperature_celsius{").count(),
        3,
        "{out}"
    );
    assert!(out.contains("device=\"e\""), "{out}");
    assert!(
        !out.contains("field=\"id\"") && !out.contains("field=\"model\""),
        "{out}"
    );
    // An array larger than the table is refused past what the table can hold.
    let big = format!("[{}]", vec![r#"{"t":1}"#; 20_000].join(","));
    assert_eq!(m.ingest("d/big", big.as_bytes(), now, 0.0), "rejected");
    let out = scrape(&c).await;
    assert!(out.contains("sensor_mqtt_series 10"), "{out}");
}

#[test]
fn bad_mqtt_settings_are_named() {
    for (mqtt, want) in [
        (
            "broker = \"tcp://b\"\n[[mqtt.subscriptions]]\ntopic = \"a\"\nexport_unmapped = true",
            "mqtt.broker",
        ),
        (
            "broker = \"mqtt://b\"\n[[mqtt.subscriptions]]\ntopic = \"a/#/b\"\nexport_unmapped = true",
            "mqtt.subscriptions[0].topic",
        ),
        (
            "broker = \"mqtt://b\"\n[[mqtt.subscriptions]]\ntopic = \"a\"",
            "mqtt.subscriptions[0].fields",
        ),
        (
            "broker = \"mqtt://b\"\n[[mqtt.subscriptions]]\ntopic = \"a\"\nfields.t = { quantity = \"temperature\", unit = \"percent\" }",
            "mqtt.subscriptions[0].fields.t",
        ),
        (
            "broker = \"mqtt://b\"\n[[mqtt.subscriptions]]\ntopic = \"a\"\nfields.t = { metric = \"sensor_board_up\" }",
            "sensor-bridge's own",
        ),
        (
            "broker = \"mqtt://b\"\npassword_env = \"NOPE_UNSET\"\nusername = \"u\"\n[[mqtt.subscriptions]]\ntopic = \"a\"\nexport_unmapped = true",
            "mqtt.password_env",
        ),
        (
            "broker = \"mqtt://b\"\n[[mqtt.subscriptions]]\ntopic = \"a\"\ndevice_regex = \"(x)\"\nexport_unmapped = true",
            "no group named device",
        ),
        (
            "broker = \"mqtt://b\"\nmax_payload = 0\n[[mqtt.subscriptions]]\ntopic = \"a\"\nexport_unmapped = true",
            "mqtt.max_payload",
        ),
        (
            "broker = \"mqtt://::1:1883\"\n[[mqtt.subscriptions]]\ntopic = \"a\"\nexport_unmapped = true",
            "mqtt.broker",
        ),
        (
            "broker = \"mqtt://h h:1\"\n[[mqtt.subscriptions]]\ntopic = \"a\"\nexport_unmapped = true",
            "mqtt.broker",
        ),
        (
            "broker = \"mqtt://b\"\n[[mqtt.subscriptions]]\ntopic = \"a/\\u0000/+\"\nexport_unmapped = true",
            "subscriptions[0].topic",
        ),
        (
            "broker = \"mqtt://b\"\n[[mqtt.subscriptions]]\ntopic = \"a\"\nexpire_after = \"0s\"\nexport_unmapped = true",
            "subscriptions[0].expire_after",
        ),
        (
            "broker = \"mqtts://b\"\nca_file = \"/dev/null\"\n[[mqtt.subscriptions]]\ntopic = \"a\"\nexport_unmapped = true",
            "no PEM certificate",
        ),
        (
            "broker = \"mqtt://b\"\n[[mqtt.subscriptions]]\ntopic = \"a\"\nfields.t = { metric = \"tidegauge_x\" }",
            "sensor-bridge's own",
        ),
        (
            "broker = \"mqtt://b\"\n[[mqtt.subscriptions]]\ntopic = \"a\"\nfields.t = { metric = \"m_y\", type = \"counter\" }\nfields.u = { metric = \"m_y_total\" }",
            "both expose \"m_y_total\"",
        ),
        (
            "broker = \"mqtt://b\"\n[[mqtt.subscriptions]]\ntopic = \"a\"\nlabels = { __bad = \"x\" }\nexport_unmapped = true",
            "not a valid label name",
        ),
    ] {
        let toml = format!("[mqtt]\n{mqtt}");
        let err = match toml::from_str::<Config>(&toml) {
            Err(e) => e.to_string(),
            Ok(c) => SensorBridge::new(c).unwrap_err().to_string(),
        };
        assert!(err.contains(want), "{mqtt}: {err}");
    }
}

/// A mosquitto broker on a loopback port; stops when dropped.
struct Broker {
    child: Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl Broker {
    fn start(port: Option<u16>) -> Self {
        Self::with(port, "allow_anonymous true\n")
    }

    /// A broker whose listener also takes `settings` (TLS, password file).
    fn with(port: Option<u16>, settings: &str) -> Self {
        let port = port.unwrap_or_else(|| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        });
        let dir =
            std::env::temp_dir().join(format!("tidegauge-mosquitto-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\n{settings}persistence false\n"),
        )
        .unwrap();
        let bin = ["/usr/sbin/mosquitto", "mosquitto"]
            .into_iter()
            .find(|b| {
                Command::new(b)
                    .arg("-h")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok()
            })
            .unwrap_or_else(|| {
                panic!("mosquitto is not installed: run scripts/install-test-deps.sh")
            });
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, port, dir }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn publish(port: u16, messages: &[(&str, &str)]) {
    let mut o = rumqttc::MqttOptions::new("tidegauge-test-publisher", "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(5));
    o.set_max_packet_size(4 << 20, 4 << 20);
    let (client, mut events) = rumqttc::AsyncClient::new(o, 64);
    for (topic, payload) in messages {
        client
            .publish(
                *topic,
                rumqttc::QoS::AtLeastOnce,
                false,
                payload.as_bytes().to_vec(),
            )
            .await
            .unwrap();
    }
    // Until every publication is acknowledged.
    let mut acked = 0;
    while acked < messages.len() {
        match tokio::time::timeout(Duration::from_secs(10), events.poll()).await {
            Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)))) => acked += 1,
            Ok(Ok(_)) => {}
            other => panic!("publishing: {other:?}"),
        }
    }
}

/// Scrapes until a line starts with `want` (at most 15 s: reconnecting waits up to a few
/// seconds).
async fn scrape_until(c: &SensorBridge, want: &str) -> String {
    let started = std::time::Instant::now();
    loop {
        let out = scrape(c).await;
        if out.lines().any(|l| l.starts_with(want)) {
            return out;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{want} never showed:\n{out}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_a_real_broker() {
    let broker = Broker::start(None);
    let port = broker.port;
    let c = Arc::new(bridge(
        &format!("mqtt://127.0.0.1:{port}"),
        "client_id = \"tidegauge-test\"\nmax_series = 6",
    ));
    let shutdown = CancellationToken::new();
    let task = tokio::spawn({
        let c = Arc::clone(&c);
        let s = shutdown.clone();
        async move { c.run(s).await }
    });
    scrape_until(&c, "sensor_mqtt_connected 1").await;
    publish(
        port,
        &[
            (
                "devices/home/livingroom",
                r#"{"temperature":23.20,"humidity":51.60}"#,
            ),
            ("devices/home/kitchen", "not json {"),
            ("switches/porch/state", "ON"),
        ],
    )
    .await;
    let out = scrape_until(&c, "switch_on{device=\"porch\"} 1").await;
    // A message far over max_payload is counted, and the connection stays up.
    let huge = "x".repeat(1_000_000);
    publish(
        port,
        &[
            ("devices/home/poison", huge.as_str()),
            ("switches/shed/state", "ON"),
        ],
    )
    .await;
    scrape_until(&c, "switch_on{device=\"shed\"} 1").await;
    assert!(
        scrape(&c)
            .await
            .contains("sensor_mqtt_received_messages_total{subscription=\"devices/home/+\",status=\"decode_error\"} 2"),
        "the large message was not counted"
    );
    assert!(
        out.contains("sensor_temperature_celsius{source=\"mqtt\",device=\"livingroom\",chip=\"\",sensor=\"temperature\"} 23.2"),
        "{out}"
    );
    assert!(
        out.contains("sensor_mqtt_received_messages_total{subscription=\"devices/home/+\",status=\"decode_error\"} 1"),
        "{out}"
    );
    // More devices than max_series (6, four held): the excess is refused and counted.
    publish(
        port,
        &[
            ("devices/home/a", r#"{"temperature":1,"humidity":1}"#),
            ("devices/home/b", r#"{"temperature":2,"humidity":2}"#),
        ],
    )
    .await;
    let out = scrape_until(
        &c,
        "sensor_mqtt_received_messages_total{subscription=\"devices/home/+\",status=\"rejected\"} 1",
    )
    .await;
    assert!(out.contains("sensor_mqtt_series 6"), "{out}");

    // The broker goes away: scrapes go on at once, and say so.
    drop(broker);
    let started = std::time::Instant::now();
    let out = scrape_until(&c, "sensor_mqtt_connected 0").await;
    assert!(
        out.contains("livingroom"),
        "readings are kept while the broker is down: {out}"
    );
    assert!(started.elapsed() < Duration::from_secs(15));
    // It comes back on the same port: the bridge reconnects and subscribes again.
    let broker = Broker::start(Some(port));
    scrape_until(&c, "sensor_mqtt_connected 1").await;
    publish(broker.port, &[("switches/porch/state", "OFF")]).await;
    scrape_until(&c, "switch_on{device=\"porch\"} 0").await;
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_a_password() {
    let tls = tidegauge_testkit::fixtures_dir().join("tls");
    let dir = std::env::temp_dir().join(format!("tidegauge-mqtt-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let users = dir.join("users");
    std::fs::write(&users, "").unwrap();
    let status = Command::new("mosquitto_passwd")
        .args(["-b"])
        .arg(&users)
        .args(["bridge", "s3cret"])
        .status()
        .unwrap();
    assert!(status.success());
    let broker = Broker::with(
        None,
        &format!(
            "allow_anonymous false\npassword_file {}\ncafile {}\ncertfile {}\nkeyfile {}\n",
            users.display(),
            tls.join("ca.pem").display(),
            tls.join("server.pem").display(),
            tls.join("server-key.pem").display()
        ),
    );
    let connect = |password: &str| {
        let pw = dir.join(format!("pw-{password}"));
        std::fs::write(&pw, format!("{password}\n")).unwrap();
        let c = Arc::new(bridge(
            &format!("mqtts://127.0.0.1:{}", broker.port),
            &format!(
                "username = \"bridge\"\npassword_file = {:?}\nca_file = {:?}\nclient_id = \"tls-{password}\"",
                pw.display().to_string(),
                tls.join("ca.pem").display().to_string()
            ),
        ));
        let shutdown = CancellationToken::new();
        tokio::spawn({
            let c = Arc::clone(&c);
            let s = shutdown.clone();
            async move { c.run(s).await }
        });
        (c, shutdown)
    };
    let (good, stop_good) = connect("s3cret");
    scrape_until(&good, "sensor_mqtt_connected 1").await;
    let (bad, stop_bad) = connect("wrong");
    // Refused: never connected, and scrapes go on.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let out = scrape(&bad).await;
    assert!(
        out.lines().any(|l| l == "sensor_mqtt_connected 0.0"),
        "{out}"
    );
    stop_good.cancel();
    stop_bad.cancel();
    let _ = std::fs::remove_dir_all(&dir);
}
