import ArgumentParser
import BankLinkClient
import BankLinkCommandLine
import BankLinkCore
import BankLinkProto
import Foundation
import GRPCCore
import SwiftProtobuf
import Synchronization

struct AlertsCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "alerts",
    abstract: "Follow, list or acknowledge alerts (docs/alerts.md).",
    subcommands: [Watch.self, List.self, Ack.self], defaultSubcommand: List.self)

  /// Filter flags shared by watch and list.
  struct Filter: ParsableArguments {
    @Option(help: "Only alerts at or above: info, warning, critical.") var severity: String?
    @Option(help: "Only this kind (repeat for several): \(kindNames.joined(separator: ", ")).") var kind: [String] = []
    @Option(help: "Only alerts about this account.") var account: String?

    func severityValue() throws -> Banklink_V1_Severity {
      switch self.severity {
      case nil, "info": .info
      case "warning": .warning
      case "critical": .critical
      case let other?: throw ValidationError("--severity '\(other)' is not info, warning or critical")
      }
    }

    func kindValues() throws -> [Banklink_V1_AlertKind] {
      try self.kind.map { name in
        guard let kind = kinds.first(where: { $0.0 == name })?.1 else {
          throw ValidationError("--kind '\(name)' is not one of \(kindNames.joined(separator: ", "))")
        }
        return kind
      }
    }
  }

  struct Watch: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Follow alerts as they are raised; reconnects and resumes after the last one printed.",
      discussion: """
        One line per alert (JSON lines with --json). With --from SEQ, alerts after SEQ are replayed
        first (--from 0: every stored alert). After a disconnect or a daemon restart the stream is
        resumed from the last alert printed, so each is printed once, in order.
        """)
    @OptionGroup var connection: ConnectionOptions
    @OptionGroup var filter: Filter
    @Option(help: "Replay alerts after this sequence first (0: all); without it, only new alerts.") var from: UInt64?
    @Option(help: "Exit after printing this many alerts (for scripts).") var count: Int?
    @Option(help: "Give up after this many reconnection attempts in a row.") var retries = 30

    func run() async throws {
      let severity = try self.filter.severityValue()
      let kinds = try self.filter.kindValues()
      let progress = Progress(last: self.from)
      while true {
        do {
          try await withBankLinkClient(self.connection.client) { client in
            let service = Banklink_V1_MonitoringService.Client(wrapping: client)
            let last = progress.last
            let request = Banklink_V1_SubscribeAlertsRequest.with {
              if let last { if last == 0 { $0.fromStart = true } else { $0.afterSequence = last } }
              $0.minSeverity = severity
              $0.kinds = kinds
              $0.accountID = self.filter.account ?? ""
            }
            try await service.subscribeAlerts(request) { response in
              for try await event in response.messages {
                switch event.event {
                case .alert(let alert):
                  try self.print(alert)
                  let printed = progress.printed(alert.sequence)
                  // Returning ends the call; an error thrown here would reach us as an RPCError.
                  if let count = self.count, printed >= count { return }
                case .caughtUp(let marker):
                  // From here on the stream is live; a resume starts after what the daemon had.
                  progress.caughtUp(marker.headSequence)
                case nil:
                  break
                }
              }
            }
          }
          if let count = self.count, progress.printedCount >= count { return }
          // The stream ended cleanly: the daemon is shutting down. Resume after it restarts.
        } catch let error as RPCError where error.code == .permissionDenied || error.code == .invalidArgument || error.code == .outOfRange {
          throw error
        } catch {
          let failures = progress.failed()
          guard failures <= self.retries else { throw error }
          FileHandle.standardError.write(
            Data("banklink: alert stream interrupted (\(error)); resuming after \(progress.last.map(String.init) ?? "now")\n".utf8))
        }
        try await Task.sleep(for: .milliseconds(min(5_000, 250 * (1 << min(progress.failures, 5)))))
      }
    }

    /// Where the stream is, across reconnections.
    final class Progress: Sendable {
      private let state: Mutex<(last: UInt64?, printed: Int, failures: Int)>
      init(last: UInt64?) { self.state = Mutex((last, 0, 0)) }
      var last: UInt64? { self.state.withLock { $0.last } }
      var failures: Int { self.state.withLock { $0.failures } }
      var printedCount: Int { self.state.withLock { $0.printed } }
      func printed(_ sequence: UInt64) -> Int {
        self.state.withLock {
          $0.last = sequence
          $0.printed += 1
          $0.failures = 0
          return $0.printed
        }
      }
      func caughtUp(_ head: UInt64) {
        self.state.withLock {
          $0.failures = 0
          if $0.last == nil || $0.last == 0 { $0.last = max($0.last ?? 0, head) }
        }
      }
      func failed() -> Int { self.state.withLock { $0.failures += 1; return $0.failures } }
    }

    func print(_ alert: Banklink_V1_Alert) throws {
      // Written straight to the file descriptor: a pipe reader sees each alert as it arrives.
      var options = JSONEncodingOptions()
      options.preserveProtoFieldNames = true
      let line = self.connection.json ? try alert.jsonString(options: options) : alertLine(alert)
      // Throws on a closed pipe (`banklink alerts watch | head`) instead of trapping.
      try FileHandle.standardOutput.write(contentsOf: Data((line + "\n").utf8))
    }
  }

  struct List: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Stored alerts, oldest first.")
    @OptionGroup var connection: ConnectionOptions
    @OptionGroup var filter: Filter
    @Flag(help: "Only alerts not yet acknowledged.") var open = false
    @Option(help: "Most alerts to print.") var limit = 100

    func run() async throws {
      let severity = try self.filter.severityValue()
      let kinds = try self.filter.kindValues()
      let alerts = try await reportingFailures {
        try await withBankLinkClient(self.connection.client) { client in
          let service = Banklink_V1_MonitoringService.Client(wrapping: client)
          var alerts: [Banklink_V1_Alert] = []
          var token = ""
          repeat {
            let page = try await service.listAlerts(.with {
              $0.pageSize = Int32(min(self.limit - alerts.count, Limits.maxPageSize))
              $0.pageToken = token
              $0.minSeverity = severity
              $0.kinds = kinds
              $0.accountID = self.filter.account ?? ""
              $0.unacknowledgedOnly = self.open
            })
            alerts += page.alerts
            token = page.nextPageToken
          } while !token.isEmpty && alerts.count < self.limit
          return alerts
        }
      }
      if self.connection.json {
        try printJSON(Banklink_V1_ListAlertsResponse.with { $0.alerts = alerts })
        return
      }
      for alert in alerts { Swift.print(alertLine(alert)) }
    }
  }

  struct Ack: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Acknowledge an alert (admin), with a note.")
    @OptionGroup var connection: ConnectionOptions
    @Argument(help: "The alert's sequence number.") var sequence: UInt64
    @Option(help: "Why it is dealt with.") var comment = ""

    func run() async throws {
      let response = try await reportingFailures {
        try await withBankLinkClient(self.connection.client) { client in
          try await Banklink_V1_MonitoringService.Client(wrapping: client).acknowledgeAlert(.with {
            $0.sequence = self.sequence
            $0.comment = self.comment
          })
        }
      }
      if self.connection.json {
        try printJSON(response)
      } else {
        Swift.print(alertLine(response.alert))
        printFields([("receipt", "journal entry \(response.receipt.journalSequence) \(hex(response.receipt.entryHash))")])
      }
    }
  }
}

private let kinds: [(String, Banklink_V1_AlertKind)] = [
  ("risk_hit", .riskHit), ("anomaly", .anomaly), ("balance_threshold", .balanceThreshold), ("bank_rejection", .bankRejection),
  ("reconciliation_break", .reconciliationBreak), ("authentication_failure", .authenticationFailure),
  ("bank_unavailable", .bankUnavailable), ("tampering", .tampering), ("certificate_expiry", .certificateExpiry),
  ("rejection_burst", .rejectionBurst),
  ("bank_file_quarantined", .bankFileQuarantined), ("configuration_refused", .configurationRefused),
]
private let kindNames = kinds.map(\.0)

/// `#12 2026-12-03T09:00:00Z critical tampering pay-s… icbc-cny-001 message [acknowledged by admin]`
func alertLine(_ alert: Banklink_V1_Alert) -> String {
  let kind = kinds.first { $0.1 == alert.kind }?.0 ?? "\(alert.kind)"
  let severity =
    switch alert.severity {
    case .critical: "CRITICAL"
    case .warning: "warning"
    default: "info"
    }
  var parts = ["#\(alert.sequence)", isoTime(alert.time), severity, kind]
  if !alert.paymentID.isEmpty { parts.append(alert.paymentID) }
  if !alert.accountID.isEmpty { parts.append(alert.accountID) }
  parts.append(alert.message)
  if !alert.acknowledgedBy.isEmpty { parts.append("[acknowledged by \(alert.acknowledgedBy)]") }
  return parts.joined(separator: "  ")
}
