import ArgumentParser
import BankLinkClient
import BankLinkCommandLine
import BankLinkProto
import Crypto
import Foundation
import GRPCCore
import SwiftProtobuf

struct AdminCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "admin",
    abstract: "Operations on the daemon itself (admin).",
    subcommands: [Backup.self, Reload.self])

  struct Reload: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Have the daemon read its configuration file again and put it in force (as SIGHUP does).",
      discussion: """
        Principals and roles, the CRL, the server's TLS certificate and key, the trusted CA bundle, \
        the approval policy and rule set files. The new configuration is checked whole first: when \
        any part fails, nothing changes, the daemon keeps serving, and this command exits with the \
        key at fault and the reason. Connections already open stay open.
        """)
    @OptionGroup var connection: ConnectionOptions

    func run() async throws {
      let reply = try await reportingFailures {
        try await withBankLinkClient(self.connection.client) { client in
          try await Banklink_V1_AdminService.Client(wrapping: client).reloadConfiguration(.init())
        }
      }
      if self.connection.json {
        try printJSON(reply)
      } else {
        var fields = [("reloaded", reply.summary), ("journal", "entry \(reply.receipt.journalSequence)")]
        if !reply.needsRestart.isEmpty { fields.append(("needs restart", reply.needsRestart.joined(separator: ", "))) }
        printFields(fields)
      }
    }
  }

  struct Backup: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Write a consistent, compacted copy of the daemon's data to FILE while it keeps serving.",
      discussion: """
        The copy is written to FILE.partial, checked against the SHA-256 the daemon sends, synced \
        and renamed to FILE. Restore it with `banklinkd --restore-from FILE --data-dir DIR` \
        (docs/operations.md).
        """)
    @OptionGroup var connection: ConnectionOptions
    @Argument(help: "Where to write the copy (must not exist).") var file: String

    func run() async throws {
      guard !FileManager.default.fileExists(atPath: self.file) else { throw ValidationError("\(self.file) exists; choose a new name") }
      let partial = self.file + ".partial"
      guard FileManager.default.createFile(atPath: partial, contents: nil, attributes: [.posixPermissions: 0o600]),
        let output = FileHandle(forWritingAtPath: partial)
      else { throw ValidationError("cannot write \(partial)") }
      let summary = try await reportingFailures {
        try await withBankLinkClient(self.connection.client) { client in
          try await Banklink_V1_AdminService.Client(wrapping: client).backup(.init()) { response in
            var hash = SHA256()
            var summary: Banklink_V1_BackupSummary?
            for try await chunk in response.messages {
              if !chunk.data.isEmpty {
                hash.update(data: chunk.data)
                try output.write(contentsOf: chunk.data)
              }
              if chunk.hasSummary { summary = chunk.summary }
            }
            guard let summary else { throw RPCError(code: .dataLoss, message: "the stream ended without its summary") }
            let digest = hash.finalize().map { String(format: "%02x", $0) }.joined()
            guard digest == summary.sha256 else {
              throw RPCError(code: .dataLoss, message: "the copy's SHA-256 \(digest) is not the daemon's \(summary.sha256)")
            }
            return summary
          }
        }
      }
      try output.synchronize()
      try output.close()
      guard rename(partial, self.file) == 0 else { throw ValidationError("cannot rename \(partial) to \(self.file)") }
      if self.connection.json {
        try printJSON(summary)
      } else {
        printFields([
          ("file", self.file), ("bytes", "\(summary.bytes)"), ("sha256", summary.sha256),
          ("journal", "up to at least entry \(summary.journalHead) (the backup's own)"), ("schema", "\(summary.schemaVersion)"),
        ])
      }
    }
  }
}
