#!/usr/bin/env bash
# Interoperability check: a stock gRPC client in another language (Python grpcio, from PyPI),
# given only proto/ and a development certificate, calls grpc.health.v1.Health/Check on a real
# banklinkd over mutual TLS; a client without a certificate is refused. Then a stock reflection
# client (grpcio-reflection, which speaks grpc.reflection.v1alpha) discovers the API with no
# proto file at all, builds AdminService/WhoAmI's messages from the descriptors it fetched and
# calls it; and the reflection protocol file we serve is compared, field for field, with the
# official one that grpcio-reflection ships. The daemon listens on
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

"$bin/banklink" dev-certs --out "$work/pki" >/dev/null
cat >"$work/banklinkd.json" <<'JSON'
{
  "listen": "127.0.0.1:0",
  "data_dir": "data",
  "tls": { "ca": "pki/ca.pem", "certificate": "pki/server.pem", "key": "pki/server.key" },
  "principals": [ { "identity": "viewer", "roles": ["viewer"] } ]
}
JSON

GRPC_VERBOSITY=NONE "$venv/bin/python" - "$work" "$bin/banklinkd" <<'PY'
import os, signal, socket, subprocess, sys
work, daemon_path = sys.argv[1], sys.argv[2]
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

    daemon.send_signal(signal.SIGTERM)
    assert notify.recv(4096).decode().startswith("STOPPING=1")
    assert daemon.wait(timeout=30) == 0, "banklinkd did not exit 0 after SIGTERM"
    print("banklinkd drained and exited 0 after SIGTERM")
finally:
    if daemon.poll() is None:
        daemon.kill()
PY
echo "interop check passed"
