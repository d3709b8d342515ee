#!/usr/bin/env bash
# Installs the external tools the tests and benchmarks use when missing: promtool (Debian's
# package prometheus), the real Pushgateway (prometheus-pushgateway, run side by side with
# tidegauge), the mosquitto MQTT broker (started by the tests on a loopback port), Python's
# prometheus_client and the prometheus_express board SDK (PyPI) always; extra Debian packages named as
# arguments (e.g. wrk, chromium for the e2e run's landing-page check). Needs root for apt-get; does nothing when everything is already there.
set -euo pipefail

if ! python3 -c 'import prometheus_client' 2>/dev/null; then
  echo "install-test-deps: installing the Python prometheus_client (a real push client for the tests)" >&2
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore prometheus-client
fi
if ! python3 -c 'import prometheus_express' 2>/dev/null; then
  echo "install-test-deps: installing prometheus_express 0.0.4 (the board SDK, run on CPython by the tests)" >&2
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore prometheus-express==0.0.4
fi

need=()
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v prometheus-pushgateway >/dev/null 2>&1 || need+=(prometheus-pushgateway)
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
for tool in "$@"; do
  command -v "$tool" >/dev/null 2>&1 || need+=("$tool")
done
[ ${#need[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "install-test-deps: missing ${need[*]}; run as root or install them with apt-get" >&2
  exit 1
fi
echo "install-test-deps: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# Debian's package may start a Prometheus server where an init system runs; tests need none.
if command -v service >/dev/null 2>&1; then
  service prometheus stop >/dev/null 2>&1 || true
  service prometheus-pushgateway stop >/dev/null 2>&1 || true
  service mosquitto stop >/dev/null 2>&1 || true
fi
command -v promtool >/dev/null
