import ArgumentParser
import BankLinkClient
import BankLinkCommandLine
import BankLinkPKI
import BankLinkProto
import Foundation
import GRPCCore
import SwiftProtobuf

struct HealthCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "health",
    abstract: "Check the daemon's health (grpc.health.v1.Health/Check)."
  )

  @OptionGroup var connection: ConnectionOptions

  @Option(help: "Service to check; empty for the whole server.")
  var service = ""

  func run() async throws {
    let response = try await reportingFailures {
      try await withBankLinkClient(self.connection.client) { client in
        try await Grpc_Health_V1_Health.Client(wrapping: client).check(.with { $0.service = self.service })
      }
    }
    if self.connection.json {
      try printJSON(response)
    } else {
      printFields([
        ("address", self.connection.client.address),
        ("service", self.service.isEmpty ? "(server)" : self.service),
        ("status", "\(response.status)".uppercased()),
      ])
    }
    if response.status != .serving { throw ExitCode(2) }
  }
}

struct WhoAmICommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "whoami",
    abstract: "Show the identity and roles the daemon gives your client certificate."
  )

  @OptionGroup var connection: ConnectionOptions

  func run() async throws {
    let response = try await reportingFailures {
      try await withBankLinkClient(self.connection.client) { client in
        try await Banklink_V1_AdminService.Client(wrapping: client).whoAmI(.init())
      }
    }
    if self.connection.json {
      try printJSON(response)
    } else {
      let roles = response.roles.map { "\($0)" }.joined(separator: ", ")
      printFields([
        ("identity", response.identity),
        ("source", response.identitySource),
        ("roles", roles.isEmpty ? "(none)" : roles),
        ("certificate serial", response.certificateSerial),
        ("certificate subject", response.certificateSubject),
        ("certificate expires", ISO8601DateFormatter().string(from: response.certificateNotAfter.date)),
      ])
    }
  }
}

struct DevCertsCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "dev-certs",
    abstract: "Create the development PKI: a CA, the daemon's certificate and one per demo principal.",
    discussion: """
      Writes ca.pem/ca.key, server.pem/server.key (SAN localhost, 127.0.0.1, ::1) and
      NAME.pem/NAME.key for admin, erp, alice, bob, viewer, auditor and clerk. Private keys are written
      with mode 0600. For development only: production brings its own CA.
      """
  )

  @Option(help: "Output directory.")
  var out = DevelopmentPKI.defaultDirectory

  @Flag(help: "Replace an existing PKI (every certificate issued from it stops working).")
  var force = false

  func run() throws {
    if FileManager.default.fileExists(atPath: "\(self.out)/ca.pem"), !self.force {
      print("\(self.out)/ca.pem exists; keeping the existing development PKI (use --force to replace it)")
      return
    }
    let written = try DevelopmentPKI.write(to: self.out)
    print("wrote \(written.count) files to \(self.out): " + written.map { ($0 as NSString).lastPathComponent }.joined(separator: " "))
  }
}
