import ArgumentParser
import BankLinkClient
import BankLinkCommandLine
import BankLinkCore
import BankLinkJournal
import BankLinkProto
import BankLinkStore
import Foundation
import GRPCCore
import SwiftProtobuf

struct AuditCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "audit",
    abstract: "List, verify and export the hash-chained audit journal (auditor or admin).",
    discussion: """
      verify and export work on a running daemon over mutual TLS, or with --data-dir on a copy of
      a data directory with no daemon (opened read-only). docs/audit.md specifies the entry hash.
      """,
    subcommands: [List.self, Verify.self, Export.self]
  )

  struct List: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List journal entries, oldest first (follows pages up to --limit).")
    @OptionGroup var connection: ConnectionOptions
    @Option(help: "Only entries about this object (a payment id, a batch id, …).") var object = ""
    @Option(help: "Only entries by this principal (system and bank for the daemon's own).") var principal = ""
    @Option(help: "Only entries with this action, e.g. payment.cancelled.") var action = ""
    @Option(help: "Only entries after this sequence number.") var after: UInt64 = 0
    @Option(help: "Most entries to print.") var limit = 50

    func run() async throws {
      let entries = try await reportingFailures {
        try await withBankLinkClient(self.connection.client) { client in
          let admin = Banklink_V1_AdminService.Client(wrapping: client)
          var entries: [Banklink_V1_AuditEntry] = []
          var token = ""
          repeat {
            let page = try await admin.listAuditEntries(.with {
              $0.afterSequence = self.after
              $0.object = self.object
              $0.principal = self.principal
              $0.action = self.action
              $0.pageSize = Int32(min(self.limit - entries.count, Limits.maxPageSize))
              $0.pageToken = token
            })
            entries += page.entries
            token = page.nextPageToken
          } while !token.isEmpty && entries.count < self.limit
          return entries
        }
      }
      if self.connection.json {
        try printJSON(Banklink_V1_ListAuditEntriesResponse.with { $0.entries = entries })
        return
      }
      printTable(
        ["SEQ", "TIME", "PRINCIPAL", "ACTION", "OBJECT", "DETAILS", "HASH"],
        entries.map { entry in
          [
            String(entry.sequence), isoTime(entry.time), entry.principal, entry.action, entry.object, entry.payload,
            String(hex(entry.entryHash).prefix(16)) + "…",
          ]
        }, maxCellWidth: 72)
    }
  }

  struct Verify: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Walk the chain and report the first entry that does not verify (exit 1 if any).")
    @OptionGroup var connection: ConnectionOptions
    @Option(help: "Verify a copy of a data directory instead of asking the daemon (no daemon needed; opened read-only).")
    var dataDir: String?
    @Option(help: "With --data-dir: the daemon's certificate (PEM), to check the signed checkpoints.")
    var certificate: String?
    @Option(help: "First entry (0: the first).") var from: UInt64 = 0
    @Option(help: "Last entry (0: the last).") var to: UInt64 = 0

    func run() async throws {
      let response: Banklink_V1_VerifyAuditJournalResponse
      if let dataDir {
        let checkpoints = try self.certificate.map { path in
          do {
            return try JournalCheckpoint.Verifier(certificatePEM: String(contentsOfFile: path, encoding: .utf8))
          } catch {
            throw ValidationError("--certificate \(path): \(error)")
          }
        }
        let report = try withOfflineStore(dataDir) { store in
          try store.withReadTransaction {
            try JournalVerifier.verify(from: self.from, to: self.to, checkpoints: checkpoints, in: $0)
          }
        }
        response = .with {
          $0.valid = report.valid
          $0.entriesVerified = report.entriesVerified
          $0.firstInvalidSequence = report.firstInvalidSequence
          $0.headHash = Data(report.headHash)
          $0.message = report.message
          $0.checkpointsVerified = report.checkpointsVerified
          $0.lastCheckpointSequence = report.lastCheckpoint
          $0.checkpointsOtherCertificate = report.checkpointsOtherCertificate
        }
      } else {
        response = try await reportingFailures {
          try await withBankLinkClient(self.connection.client) { client in
            try await Banklink_V1_AdminService.Client(wrapping: client).verifyAuditJournal(.with {
              $0.fromSequence = self.from
              $0.toSequence = self.to
            })
          }
        }
      }
      if self.connection.json {
        try printJSON(response)
      } else {
        printFields([
          ("valid", response.valid ? "yes" : "NO"),
          ("entries verified", String(response.entriesVerified)),
          ("first invalid", response.firstInvalidSequence == 0 ? "-" : String(response.firstInvalidSequence)),
          ("head hash", hex(response.headHash)),
          ("checkpoints", self.dataDir != nil && self.certificate == nil
            ? "not checked (give --certificate)"
            : "\(response.checkpointsVerified) verified, the last at entry \(response.lastCheckpointSequence)"
              + (response.checkpointsOtherCertificate > 0 ? "; \(response.checkpointsOtherCertificate) signed with another certificate" : "")),
          ("message", response.message),
        ])
      }
      if !response.valid { throw ExitCode.failure }
    }
  }

  struct Export: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Write the journal as JSON lines, one entry per line, oldest first.",
      discussion: """
        Each line: sequence, time_ms, principal, action, object, payload (the exact bytes hashed),
        payload_sha256, previous_hash, entry_hash (hex). docs/audit.md shows how to verify an export
        without BankLink (scripts/verify_audit_export.py).
        """)
    @OptionGroup var connection: ConnectionOptions
    @Option(help: "Export from a copy of a data directory instead of asking the daemon.") var dataDir: String?
    @Option(help: "Write to this file instead of standard output.") var out: String?
    @Option(help: "Only entries after this sequence number.") var after: UInt64 = 0

    func run() async throws {
      var sink = try ExportSink(path: self.out)
      if let dataDir {
        try withOfflineStore(dataDir) { store in
          var after = self.after
          while true {
            let entries = try store.withReadTransaction { try AuditJournal.entries(after: after, limit: Limits.maxPageSize, in: $0) }
            for entry in entries { try sink.write(ExportLine(entry)) }
            guard let last = entries.last else { break }
            after = last.sequence
          }
        }
      } else {
        try await reportingFailures {
          try await withBankLinkClient(self.connection.client) { client in
            let admin = Banklink_V1_AdminService.Client(wrapping: client)
            var token = ""
            repeat {
              let page = try await admin.listAuditEntries(.with {
                $0.afterSequence = self.after
                $0.pageSize = Int32(Limits.maxPageSize)
                $0.pageToken = token
              })
              for entry in page.entries { try sink.write(ExportLine(entry)) }
              token = page.nextPageToken
            } while !token.isEmpty
          }
        }
      }
      try sink.close()
    }
  }
}

/// One line of `banklink audit export`.
struct ExportLine: Encodable {
  var sequence: UInt64
  var time_ms: Int64
  var principal: String
  var action: String
  var object: String
  var payload: String
  var payload_sha256: String
  var previous_hash: String
  var entry_hash: String

  init(_ entry: AuditEntry) {
    self.sequence = entry.sequence
    self.time_ms = entry.time.millisecondsSinceEpoch
    self.principal = entry.principal
    self.action = entry.action
    self.object = entry.object
    self.payload = entry.payload
    self.payload_sha256 = hex(entry.payloadDigest)
    self.previous_hash = hex(entry.previousHash)
    self.entry_hash = hex(entry.entryHash)
  }

  init(_ entry: Banklink_V1_AuditEntry) {
    self.sequence = entry.sequence
    self.time_ms = entry.time.seconds * 1000 + Int64(entry.time.nanos / 1_000_000)
    self.principal = entry.principal
    self.action = entry.action
    self.object = entry.object
    self.payload = entry.payload
    self.payload_sha256 = hex(entry.payloadDigest)
    self.previous_hash = hex(entry.previousHash)
    self.entry_hash = hex(entry.entryHash)
  }
}

/// Standard output or a file, one JSON object per line. A file is written as `PATH.partial`,
/// synced and renamed to `PATH` by ``close()``: an export cut short (a full disk, an error)
/// never leaves a file that looks whole — a truncated export is a valid prefix of the chain and
/// would verify. An existing `PATH` is refused, not overwritten.
struct ExportSink {
  private let handle: FileHandle
  private let path: String?
  private let encoder: JSONEncoder

  init(path: String?) throws {
    if let path {
      guard !FileManager.default.fileExists(atPath: path) else { throw ValidationError("\(path) exists; export to a new file") }
      let partial = path + ".partial"
      guard FileManager.default.createFile(atPath: partial, contents: nil) else {
        throw ValidationError("cannot create \(partial)")
      }
      self.handle = try FileHandle(forWritingTo: URL(fileURLWithPath: partial))
      self.path = path
    } else {
      self.handle = FileHandle.standardOutput
      self.path = nil
    }
    self.encoder = JSONEncoder()
    self.encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
  }

  /// Throws when the line cannot be written (a closed pipe, a full disk) instead of trapping.
  mutating func write(_ line: ExportLine) throws {
    var data = try self.encoder.encode(line)
    data.append(0x0A)
    try self.handle.write(contentsOf: data)
  }

  func close() throws {
    guard let path = self.path else { return }
    try self.handle.synchronize()
    try self.handle.close()
    guard rename(path + ".partial", path) == 0 else { throw ValidationError("cannot rename \(path).partial to \(path)") }
  }
}

/// Opens a data directory read-only, with no daemon, and runs `body` on its store.
func withOfflineStore<Result>(_ directory: String, _ body: (Store) throws -> Result) throws -> Result {
  do {
    // LMDB maps at least the size the environment records, whatever is asked here.
    // Only the journal's databases: a copy written by an older or newer build may lack others.
    let store = try Store(configuration: .init(
      directory: directory, mapSizeMiB: Limits.minMapSizeMiB, databases: [.meta, .audit, .auditByObject], readOnly: true))
    return try body(store)
  } catch let error as StoreError {
    FileHandle.standardError.write(Data("banklink: \(directory): \(error.message)\n".utf8))
    throw ExitCode.failure
  }
}

func hex(_ bytes: some Sequence<UInt8>) -> String { Hex.encode(bytes) }
