import ArgumentParser
import BankLinkClient
import BankLinkCommandLine
import BankLinkProto
import Foundation
import GRPCCore
import SwiftProtobuf

struct CertificatesCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "certificates",
    abstract: "Revoke client certificates (admin).",
    subcommands: [Revoke.self])

  struct Revoke: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Revoke a client certificate by serial number or SHA-256 fingerprint, or every certificate of an identity.",
      discussion: """
        The certificate is refused on its next call, also on connections already open, and at \
        every TLS handshake after. Serials and fingerprints are hex, as `openssl x509 -serial` and \
        `openssl x509 -fingerprint -sha256` print them (colons allowed).
        """)
    @OptionGroup var connection: ConnectionOptions
    @Option(help: "Serial number of the certificate (hex).") var serial: String?
    @Option(name: .customLong("sha256"), help: "SHA-256 fingerprint of the certificate (hex).") var fingerprint: String?
    @Option(help: "Revoke every certificate of this identity.") var identity: String?
    @Option(help: "Why (required; kept in the revocation record and the audit journal).") var reason: String

    func validate() throws {
      guard [self.serial, self.fingerprint, self.identity].compactMap({ $0 }).count == 1 else {
        throw ValidationError("name exactly one of --serial, --sha256 and --identity")
      }
    }

    func run() async throws {
      let response = try await reportingFailures {
        try await withBankLinkClient(self.connection.client) { client in
          try await Banklink_V1_AdminService.Client(wrapping: client).revokeCertificate(.with {
            if let serial = self.serial { $0.serialNumber = serial }
            if let fingerprint = self.fingerprint { $0.sha256Fingerprint = fingerprint }
            if let identity = self.identity { $0.identity = identity }
            $0.reason = self.reason
          })
        }
      }
      if self.connection.json {
        try printJSON(response)
        return
      }
      let target = self.serial.map { "serial \($0)" } ?? self.fingerprint.map { "SHA-256 \($0)" } ?? "identity \(self.identity ?? "")"
      printFields([
        ("revoked", target),
        ("status", response.alreadyRevoked ? "was revoked already" : "revoked now"),
        ("receipt", response.hasReceipt ? "journal entry \(response.receipt.journalSequence) \(hex(response.receipt.entryHash))" : "-"),
      ])
    }
  }
}
