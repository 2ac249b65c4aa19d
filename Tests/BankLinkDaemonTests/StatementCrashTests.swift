import BankLinkClient
import BankLinkCore
import BankLinkProto
import BankLinkTestSupport
import Foundation
import GRPCCore
import SwiftProtobuf
import Testing

/// kill -9 while a large statement is being stored: after the restart the statement is either
/// there whole or not at all, never half, and importing the file again stores it exactly once.
@Suite("Statement import crash safety")
struct StatementCrashTests {
  /// Entries in the file: several of the import's commits.
  static let entries = Limits.statementEntriesPerCommit * 4

  static func camt053() -> Data {
    var xml = """
      <?xml version="1.0" encoding="UTF-8"?>
      <Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.08"><BkToCstmrStmt>
      <GrpHdr><MsgId>CRASH-1</MsgId><CreDtTm>2026-12-03T23:00:00Z</CreDtTm></GrpHdr>
      <Stmt><Id>CRASH-1</Id><ElctrncSeqNb>1</ElctrncSeqNb>
      <Acct><Id><Othr><Id>1001234509876543210</Id></Othr></Id><Ccy>CNY</Ccy></Acct>
      <Bal><Tp><CdOrPrtry><Cd>OPBD</Cd></CdOrPrtry></Tp><Amt Ccy="CNY">\(Self.entries).00</Amt><CdtDbtInd>CRDT</CdtDbtInd><Dt><Dt>2026-12-03</Dt></Dt></Bal>
      <Bal><Tp><CdOrPrtry><Cd>CLBD</Cd></CdOrPrtry></Tp><Amt Ccy="CNY">0.00</Amt><CdtDbtInd>CRDT</CdtDbtInd><Dt><Dt>2026-12-03</Dt></Dt></Bal>

      """
    for index in 0..<Self.entries {
      xml += """
        <Ntry><Amt Ccy="CNY">1.00</Amt><CdtDbtInd>DBIT</CdtDbtInd><Sts><Cd>BOOK</Cd></Sts><BookgDt><Dt>2026-12-03</Dt></BookgDt>
        <AcctSvcrRef>CRASH-\(index)</AcctSvcrRef><NtryDtls><TxDtls><RmtInf><Ustrd>Fee \(index)</Ustrd></RmtInf></TxDtls></NtryDtls></Ntry>

        """
    }
    return Data((xml + "</Stmt></BkToCstmrStmt></Document>\n").utf8)
  }

  @Test("kill -9 during the import's commits: whole or absent after restart; imported again exactly once")
  func killDuringImport() async throws {
    try await withTemporaryDirectory { directory in
      let pki = try TestPKI(directory: directory)
      let config = try writeTestDaemonConfig(in: directory, principals: [("clerk", ["reconciler"])])
      let socket = try NotifySocket(path: directory.appending("notify.sock"))
      let clerk = try pki.client(commonName: "clerk", file: "clerk")
      let file = Self.camt053()

      func upload(_ port: Int) async throws -> Banklink_V1_ImportStatementResponse {
        try await withBankLinkClient(pki.clientConfiguration(address: "127.0.0.1:\(port)", identity: clerk)) { grpc in
          try await Banklink_V1_ReconciliationService.Client(wrapping: grpc).importStatement(requestProducer: { writer in
            var offset = 0
            while offset < file.count {
              let end = min(offset + (1 << 20), file.count)
              try await writer.write(.with { $0.content = file.subdata(in: offset..<end) })
              offset = end
            }
          })
        }
      }
      func stored(_ port: Int) async throws -> [Banklink_V1_StatementSummary] {
        try await withBankLinkClient(pki.clientConfiguration(address: "127.0.0.1:\(port)", identity: clerk)) { grpc in
          try await Banklink_V1_ReconciliationService.Client(wrapping: grpc).listStatements(.with { _ in }).statements
        }
      }

      // A first daemon measures how long the whole import takes here, then is killed at points
      // spread over that time in the rounds that follow: during the upload, the check, and
      // the commits.
      var daemon = try await RunningDaemon.start(config: config, socket: socket)
      defer { if daemon.process.isRunning { daemon.process.terminate() } }
      let started = ContinuousClock.now
      let first = try await upload(daemon.port)
      let whole = ContinuousClock.now - started
      #expect(first.entriesImported == Int64(Self.entries))
      await daemon.kill9()
      // A fresh data directory for the crash rounds.
      try FileManager.default.removeItem(atPath: directory.appending("data"))

      var outcomes: [String] = []
      for fraction in [0.5, 0.65, 0.8, 0.9] {
        daemon = try await RunningDaemon.start(config: config, socket: socket)
        let port = daemon.port
        let attempt = Task { try await upload(port) }
        try await Task.sleep(for: whole * fraction)
        await daemon.kill9()
        let finished = (try? await attempt.value) != nil
        daemon = try await RunningDaemon.start(config: config, socket: socket)
        let after = try await stored(daemon.port)
        // Never half: nothing, or the statement with every entry.
        #expect(after.isEmpty || (after.count == 1 && after[0].entries == Int64(Self.entries)), "\(after)")
        outcomes.append(after.isEmpty ? "absent" : "whole")
        if finished { #expect(after.count == 1, "an acknowledged import must survive kill -9") }
        await daemon.kill9()
      }
      // Whatever the rounds left, the file imports exactly once.
      daemon = try await RunningDaemon.start(config: config, socket: socket)
      let last = try await upload(daemon.port)
      let listed = try await stored(daemon.port)
      #expect(listed.count == 1 && listed[0].entries == Int64(Self.entries), "\(listed)")
      #expect(last.duplicateFile == outcomes.contains("whole"))
      print("statement crash test: import takes \(whole); after kill -9 the statement was \(outcomes.joined(separator: ", "))")
      await daemon.stop()
    }
  }
}
