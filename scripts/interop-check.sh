#!/usr/bin/env bash
# Interoperability check: a stock gRPC client in another language (Python grpcio, from PyPI),
# given only proto/ and a development certificate, calls grpc.health.v1.Health/Check on a real
# banklinkd over mutual TLS; a client without a certificate is refused. Then a stock reflection
# client (grpcio-reflection, which speaks grpc.reflection.v1alpha) discovers the API with no
# proto file at all, builds AdminService/WhoAmI's messages from the descriptors it fetched and
# calls it; and the reflection protocol file we serve is compared, field for field, with the
# official one that grpcio-reflection ships. GetBalance is called from the cache and with refresh
# (the unary fast path answers the first, gRPC Swift the second), and a stock C++ client (Debian's
# grpc++, Tests/Interop/cpp_client.cc) checks the fast path's answers and refusals. The daemon listens on
# port 0 and reports its port through NOTIFY_SOCKET, as it would to systemd.
set -euo pipefail

cd "$(dirname "$0")/.."
bin="$(pwd)/.build/debug"
venv=".build/interop-venv"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

if [ ! -x "$venv/bin/python" ]; then
  if ! python3 -m venv "$venv" 2>/dev/null; then
    # Debian's own python3 ships venv support separately.
    sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq && $sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
    rm -rf "$venv" && python3 -m venv "$venv"
  fi
fi
"$venv/bin/python" -c 'import grpc, grpc_tools, grpc_reflection' 2>/dev/null ||
  "$venv/bin/pip" install --quiet --disable-pip-version-check grpcio grpcio-tools grpcio-reflection

# Generate Python stubs from our proto/ only. The proto package is grpc.health.v1, which would
# shadow grpcio's own `grpc` module, so the generated files move to a package of their own.
mkdir -p "$work/raw" "$work/gen/grpc_health"
"$venv/bin/python" -m grpc_tools.protoc -Iproto --python_out="$work/raw" --grpc_python_out="$work/raw" \
  proto/grpc/health/v1/health.proto
cp "$work"/raw/grpc/health/v1/health_pb2*.py "$work/gen/grpc_health/"
sed -i 's/^from grpc.health.v1 import/from grpc_health import/' "$work/gen/grpc_health/health_pb2_grpc.py"

# A stock C++ client too (Debian's gRPC C++, installed by `make deps`): Tests/Interop/cpp_client.cc.
# shellcheck disable=SC2046  # pkg-config output is meant to be split
g++ -std=c++17 -O1 -o "$work/cpp_client" Tests/Interop/cpp_client.cc $(pkg-config --cflags --libs grpc++ protobuf) -pthread

"$bin/banklink" dev-certs --out "$work/pki" >/dev/null
metrics_port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
cat >"$work/banklinkd.json" <<JSON
{
  "listen": "127.0.0.1:0",
  "data_dir": "data",
  "tls": { "ca": "pki/ca.pem", "certificate": "pki/server.pem", "key": "pki/server.key" },
  "metrics": { "listen": "127.0.0.1:$metrics_port" },
  "principals": [ { "identity": "viewer", "roles": ["viewer"] } ]
}
JSON

GRPC_VERBOSITY=NONE "$venv/bin/python" - "$work" "$bin/banklinkd" "$work/cpp_client" "$metrics_port" <<'PY'
import os, signal, socket, subprocess, sys, urllib.request
work, daemon_path, cpp_client, metrics_port = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]

def metric(name):
    """A counter of the daemon's metrics endpoint (0 when absent: counters appear at their first)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
    return float(next((line.split()[-1] for line in text.splitlines() if line.startswith(name)), 0))
def fast_path_answered():
    """The daemon's count of calls its unary fast path answered (banklink_rpc_fast_path_answered)."""
    return metric("banklink_rpc_fast_path_answered")
sys.path.insert(0, work + "/gen")
import grpc
from grpc_health import health_pb2, health_pb2_grpc

read = lambda name: open(f"{work}/pki/{name}", "rb").read()
notify_path = f"{work}/notify.sock"
notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
notify.bind(notify_path)
notify.settimeout(60)

daemon = subprocess.Popen(
    [daemon_path, "--config", f"{work}/banklinkd.json", "--log-level", "warning"],
    env={**os.environ, "NOTIFY_SOCKET": notify_path},
)
try:
    # Status lines (starting, the first bank sync) may come before READY=1.
    ready = notify.recv(4096).decode()
    while not ready.startswith("READY=1"):
        assert ready.startswith("STATUS="), ready
        ready = notify.recv(4096).decode()
    port = int(ready.rsplit(":", 1)[1])
    target = f"127.0.0.1:{port}"

    creds = grpc.ssl_channel_credentials(read("ca.pem"), read("viewer.key"), read("viewer.pem"))
    with grpc.secure_channel(target, creds) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING, reply
    print("python grpcio Health/Check over mutual TLS: SERVING")

    with grpc.secure_channel(target, grpc.ssl_channel_credentials(read("ca.pem"))) as channel:
        try:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.UNAVAILABLE, error
            print("python grpcio without a client certificate: refused (UNAVAILABLE)")
        else:
            raise AssertionError("a client without a certificate was served")

    # Server reflection, as grpcurl or Postman would use it: no proto file on this side.
    from google.protobuf import descriptor_pool, message_factory
    from grpc_reflection.v1alpha import reflection_pb2 as official
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
    with grpc.secure_channel(target, creds) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = set(database.get_services())
        expected = {"banklink.v1.AccountService", "banklink.v1.PaymentService", "banklink.v1.AdminService",
                    "banklink.v1.MonitoringService", "banklink.v1.ReconciliationService", "grpc.health.v1.Health"}
        assert expected <= services, services
        pool = descriptor_pool.DescriptorPool(database)
        method = pool.FindServiceByName("banklink.v1.AdminService").FindMethodByName("WhoAmI")
        request_type = message_factory.GetMessageClass(method.input_type)
        reply_type = message_factory.GetMessageClass(method.output_type)
        who_am_i = channel.unary_unary("/banklink.v1.AdminService/WhoAmI",
                                       request_serializer=request_type.SerializeToString,
                                       response_deserializer=reply_type.FromString)
        reply = who_am_i(request_type(), timeout=10)
        assert reply.identity == "viewer", reply
        # GetBalance from the cache (the unary fast path answers it) and with refresh (gRPC Swift
        # serves it: it asks the bank) agree on the account.
        method = pool.FindServiceByName("banklink.v1.AccountService").FindMethodByName("GetBalance")
        balance_request = message_factory.GetMessageClass(method.input_type)
        get_balance = channel.unary_unary("/banklink.v1.AccountService/GetBalance",
                                          request_serializer=balance_request.SerializeToString,
                                          response_deserializer=message_factory.GetMessageClass(method.output_type).FromString)
        # The refresh first: READY=1 may come before the first sync stored a balance.
        live = get_balance(balance_request(account_id="icbc-cny-001", refresh=True), timeout=10)
        cached, call = get_balance.with_call(balance_request(account_id="icbc-cny-001"), timeout=10,
                                             metadata=[("x-request-id", "python-interop-1")])
        assert cached.account_id == live.account_id == "icbc-cny-001", (cached, live)
        assert cached.ledger.currency_code == live.ledger.currency_code == "CNY", (cached, live)
        assert ("x-request-id", "python-interop-1") in call.initial_metadata(), call.initial_metadata()
        try:
            get_balance(balance_request(account_id="nope-cny-404"), timeout=10)
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.NOT_FOUND, error
        else:
            raise AssertionError("an unknown account was answered")
        print("python grpcio GetBalance: from the cache and with refresh alike; an unknown account NOT_FOUND")
        # The payment contract is described down to its fields.
        create = pool.FindMessageTypeByName("banklink.v1.CreatePaymentRequest")
        assert "instruction" in create.fields_by_name, list(create.fields_by_name)
        # Our reflection proto is wire-compatible with the official definition.
        ours = pool.FindFileByName("grpc/reflection/v1alpha/reflection.proto")
        shape = lambda message: sorted((f.name, f.number, f.type, f.containing_oneof.name if f.containing_oneof else "")
                                       for f in message.fields)
        for name, message in official.DESCRIPTOR.message_types_by_name.items():
            assert shape(message) == shape(ours.message_types_by_name[name]), name
        print(f"python grpcio-reflection: {len(services)} services listed, WhoAmI called from fetched descriptors, "
              "reflection.proto matches the official one")

    # The same daemon from a stock C++ client (Debian's grpc++): the fast path's answers, its
    # authorization, and what it hands to gRPC Swift (a compressed request).
    before = fast_path_answered()
    assert before == 4, before  # Python's Health/Check, WhoAmI, cached GetBalance, unknown account
    subprocess.run([cpp_client, target, f"{work}/pki/ca.pem", f"{work}/pki/viewer.pem", f"{work}/pki/viewer.key",
                    f"{work}/pki/alice.pem", f"{work}/pki/alice.key"], check=True)
    # Of its thirteen calls the fast path answered ten (the gzip-compressed one, the one whose
    # bytes are no message and a GetBalance with refresh went to gRPC Swift).
    after = fast_path_answered()
    assert after - before == 10, (before, after)
    print(f"the unary fast path answered {after:.0f} of these calls (banklink_rpc_fast_path_answered)")
    # Its reconnect did resume the TLS session (so its checks above covered a resumed session).
    resumed = metric("banklink_tls_sessions_resumed_total")
    assert resumed >= 1, resumed
    print(f"the C++ client's reconnect resumed its TLS session and kept its identity ({resumed:.0f} resumed)")

    daemon.send_signal(signal.SIGTERM)
    # Status lines (the first bank sync's, which may come after READY=1) can be queued ahead.
    stopping = notify.recv(4096).decode()
    while not stopping.startswith("STOPPING=1"):
        assert stopping.startswith("STATUS="), stopping
        stopping = notify.recv(4096).decode()
    assert daemon.wait(timeout=30) == 0, "banklinkd did not exit 0 after SIGTERM"
    print("banklinkd drained and exited 0 after SIGTERM")
finally:
    if daemon.poll() is None:
        daemon.kill()
PY
echo "interop check passed"
