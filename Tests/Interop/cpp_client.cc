// A stock C++ gRPC client (Debian's gRPC, the generic stub: no generated code) calling a real
// banklinkd over mutual TLS, for the methods the unary fast path answers (UnaryFastPath.swift)
// and for what it hands to gRPC Swift. Built and run by scripts/interop-check.sh:
//
//   cpp_client HOST:PORT CA CERT KEY STRANGER_CERT STRANGER_KEY
//
// CERT/KEY must be principal "viewer" (role viewer); STRANGER_* a certificate of the same CA whose
// identity is not a principal. Exits 0 when every check holds, 1 naming the first that failed.
#include <grpc/grpc_security.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

namespace {

struct Reply {
  grpc::Status status;
  std::string body;
  std::multimap<std::string, std::string> headers;
  std::multimap<std::string, std::string> trailers;
};

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream out;
  out << in.rdbuf();
  return out.str();
}

// Protobuf bytes of a message whose field 1 is the string `value` (GetBalanceRequest.account_id,
// HealthCheckRequest.service).
std::string StringField1(const std::string& value) {
  std::string out;
  out.push_back(0x0a);
  out.push_back(static_cast<char>(value.size()));  // short values only: one varint byte
  return out + value;
}

std::multimap<std::string, std::string> Copy(const std::multimap<grpc::string_ref, grpc::string_ref>& from) {
  std::multimap<std::string, std::string> to;
  for (const auto& [key, value] : from) to.emplace(std::string(key.data(), key.size()), std::string(value.data(), value.size()));
  return to;
}

Reply Call(grpc::GenericStub& stub, const std::string& method, const std::string& request,
           grpc_compression_algorithm compression = GRPC_COMPRESS_NONE) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  context.AddMetadata("x-request-id", "cpp-client-1");
  if (compression != GRPC_COMPRESS_NONE) context.set_compression_algorithm(compression);
  grpc::CompletionQueue queue;
  grpc::Slice slice(request);
  grpc::ByteBuffer requestBuffer(&slice, 1);
  auto call = stub.PrepareUnaryCall(&context, method, requestBuffer, &queue);
  call->StartCall();
  grpc::ByteBuffer response;
  Reply reply;
  call->Finish(&response, &reply.status, reinterpret_cast<void*>(1));
  void* tag = nullptr;
  bool ok = false;
  queue.Next(&tag, &ok);
  std::vector<grpc::Slice> slices;
  if (reply.status.ok() && response.Dump(&slices).ok()) {
    for (const auto& part : slices) reply.body.append(reinterpret_cast<const char*>(part.begin()), part.size());
  }
  reply.headers = Copy(context.GetServerInitialMetadata());
  reply.trailers = Copy(context.GetServerTrailingMetadata());
  queue.Shutdown();
  while (queue.Next(&tag, &ok)) {
  }
  return reply;
}

int failures = 0;

void Check(bool condition, const std::string& what) {
  std::printf("%s: %s\n", condition ? "ok" : "FAILED", what.c_str());
  if (!condition) failures++;
}

bool Has(const std::multimap<std::string, std::string>& metadata, const std::string& key, const std::string& value) {
  auto range = metadata.equal_range(key);
  for (auto it = range.first; it != range.second; ++it)
    if (value.empty() || it->second == value) return true;
  return false;
}

// `sessions`: a TLS session cache shared by channels, so that a new channel resumes the session
// of an earlier one (as Java and other clients do by default when they reconnect).
std::shared_ptr<grpc::Channel> Connect(const std::string& target, const std::string& ca, const std::string& cert,
                                       const std::string& key, grpc_ssl_session_cache* sessions = nullptr) {
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = ReadFile(ca);
  ssl.pem_cert_chain = ReadFile(cert);
  ssl.pem_private_key = ReadFile(key);
  grpc::ChannelArguments args;
  args.SetSslTargetNameOverride("localhost");
  if (sessions != nullptr) {
    grpc_arg arg = grpc_ssl_session_cache_create_channel_arg(sessions);
    args.SetPointerWithVtable(arg.key, arg.value.pointer.p, arg.value.pointer.vtable);
  }
  return grpc::CreateCustomChannel(target, grpc::SslCredentials(ssl), args);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 7) {
    std::fprintf(stderr, "usage: %s HOST:PORT CA CERT KEY STRANGER_CERT STRANGER_KEY\n", argv[0]);
    return 2;
  }
  grpc::GenericStub viewer(Connect(argv[1], argv[2], argv[3], argv[4]));
  grpc::GenericStub stranger(Connect(argv[1], argv[2], argv[5], argv[6]));

  Reply health = Call(viewer, "/grpc.health.v1.Health/Check", "");
  Check(health.status.ok() && health.body == std::string("\x08\x01", 2), "Health/Check answers SERVING");
  Check(Has(health.headers, "x-request-id", "cpp-client-1"), "the client's x-request-id comes back in the headers");

  Reply unknown = Call(viewer, "/grpc.health.v1.Health/Check", StringField1("no.such.Service"));
  Check(unknown.status.error_code() == grpc::StatusCode::NOT_FOUND, "Health/Check of an unknown service: NOT_FOUND");

  Reply who = Call(viewer, "/banklink.v1.AdminService/WhoAmI", "");
  Check(who.status.ok() && who.body.find("viewer") != std::string::npos, "WhoAmI names the caller 'viewer'");

  Reply balance = Call(viewer, "/banklink.v1.AccountService/GetBalance", StringField1("icbc-cny-001"));
  Check(balance.status.ok() && balance.body.find("icbc-cny-001") != std::string::npos && balance.body.find("CNY") != std::string::npos,
        "GetBalance of icbc-cny-001 answers its CNY balance");

  Reply missing = Call(viewer, "/banklink.v1.AccountService/GetBalance", StringField1("nope-cny-404"));
  Check(missing.status.error_code() == grpc::StatusCode::NOT_FOUND && !missing.status.error_details().empty(),
        "GetBalance of an unknown account: NOT_FOUND with google.rpc.Status details");
  Check(Has(missing.trailers, "x-request-id", "cpp-client-1"), "an error carries the x-request-id in its trailers");

  Reply invalid = Call(viewer, "/banklink.v1.AccountService/GetBalance", StringField1(""));
  Check(invalid.status.error_code() == grpc::StatusCode::INVALID_ARGUMENT &&
            invalid.status.error_message().find("account_id") != std::string::npos,
        "GetBalance without an account: INVALID_ARGUMENT naming account_id");

  Reply payment = Call(viewer, "/banklink.v1.PaymentService/GetPayment", StringField1("pay-nope"));
  Check(payment.status.error_code() == grpc::StatusCode::NOT_FOUND, "GetPayment of an unknown payment: NOT_FOUND");

  Reply refused = Call(stranger, "/banklink.v1.AdminService/WhoAmI", "");
  Check(refused.status.error_code() == grpc::StatusCode::PERMISSION_DENIED,
        "WhoAmI from a certificate that is no principal: PERMISSION_DENIED");

  Reply compressed = Call(viewer, "/banklink.v1.AdminService/WhoAmI", "", GRPC_COMPRESS_GZIP);
  Check(compressed.status.error_code() == grpc::StatusCode::UNIMPLEMENTED, "a gzip-compressed request: UNIMPLEMENTED");

  Reply garbage = Call(viewer, "/banklink.v1.AccountService/GetBalance", std::string("\xff\xff\xff", 3));
  Check(garbage.status.error_code() == grpc::StatusCode::INVALID_ARGUMENT,
        "GetBalance with bytes that are no message: INVALID_ARGUMENT (gRPC Swift's answer, handed over by the fast path)");

  // A reconnect that resumes the TLS session still carries the client's certificate: on the
  // fast path (WhoAmI) and through gRPC Swift (GetBalance with refresh asks the bank).
  grpc_ssl_session_cache* sessions = grpc_ssl_session_cache_create_lru(8);
  {
    grpc::GenericStub first(Connect(argv[1], argv[2], argv[3], argv[4], sessions));
    Reply full = Call(first, "/banklink.v1.AdminService/WhoAmI", "");
    Check(full.status.ok(), "WhoAmI on a channel that stores its TLS session");
  }
  {
    grpc::GenericStub resumed(Connect(argv[1], argv[2], argv[3], argv[4], sessions));
    Reply again = Call(resumed, "/banklink.v1.AdminService/WhoAmI", "");
    Check(again.status.ok() && again.body.find("viewer") != std::string::npos,
          "WhoAmI on a reconnect that resumes the TLS session names 'viewer' (" + again.status.error_message() + ")");
    std::string refresh = StringField1("icbc-cny-001") + std::string("\x10\x01", 2);
    Reply served = Call(resumed, "/banklink.v1.AccountService/GetBalance", refresh);
    Check(served.status.ok(), "GetBalance with refresh (gRPC Swift) on the resumed session (" + served.status.error_message() + ")");
  }
  grpc_ssl_session_cache_destroy(sessions);

  if (failures > 0) {
    std::printf("%d check(s) failed\n", failures);
    return 1;
  }
  std::printf("C++ grpc++ client: every check passed\n");
  return 0;
}
