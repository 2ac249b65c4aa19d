import ArgumentParser
import BankLinkClient
import BankLinkCommandLine
import BankLinkProto
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import SwiftProtobuf

/// `banklink rules`: the risk rule set and the rule author's playground (docs/rules.md).
struct RulesCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "rules", abstract: "Show, check, replace, test and backtest the risk rules; evaluate expressions (admin).",
    subcommands: [
      Show.self, Validate.self, Put.self, Test.self, Backtest.self, ShadowReport.self, ShadowStop.self, Eval.self,
    ])

  static func readRuleSet(_ file: String) throws -> Banklink_V1_RuleSet {
    do {
      return try Banklink_V1_RuleSet(jsonString: String(contentsOfFile: file, encoding: .utf8))
    } catch {
      throw ValidationError("\(file) is not a rule set in JSON (the RuleSet message, as `rules show` prints it): \(error)")
    }
  }

  static func admin<Result: Sendable>(
    _ connection: ConnectionOptions, _ body: (Banklink_V1_AdminService.Client<HTTP2ClientTransport.Posix>) async throws -> Result
  ) async throws -> Result {
    try await reportingFailures {
      try await withBankLinkClient(connection.client) { try await body(Banklink_V1_AdminService.Client(wrapping: $0)) }
    }
  }

  struct Show: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the rule set in force as JSON (version 0: none put yet).")
    @OptionGroup var connection: ConnectionOptions
    @Flag(help: "The shadow set instead (version 0: none running).") var shadow = false
    func run() async throws {
      let shadow = self.shadow
      let ruleSet = try await RulesCommand.admin(self.connection) { try await $0.getRuleSet(.with { $0.shadow = shadow }) }
      try printJSON(ruleSet)
    }
  }

  struct Validate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Check FILE (syntax, types, limits) without putting it in force.")
    @OptionGroup var connection: ConnectionOptions
    @Argument(help: "Rule set file (JSON).") var file: String
    func run() async throws {
      let ruleSet = try RulesCommand.readRuleSet(self.file)
      let response = try await RulesCommand.admin(self.connection) { try await $0.validateRuleSet(.with { $0.ruleSet = ruleSet }) }
      if self.connection.json {
        try printJSON(response)
      } else if response.valid {
        print("valid: \(ruleSet.rules.count) rules, \(ruleSet.lists.count) lists")
      } else {
        for issue in response.issues { print("\(issue.field): \(issue.message)") }
      }
      if !response.valid { throw ExitCode.failure }
    }
  }

  struct Put: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Put FILE in force as the next version of the rule set, or run it as the shadow set (--shadow).")
    @OptionGroup var connection: ConnectionOptions
    @Argument(help: "Rule set file (JSON).") var file: String
    @Option(help: "Refuse unless this is the version in force (with --shadow: the shadow version; 0: do not check).")
    var expectedVersion: UInt64 = 0
    @Flag(help: "Run it beside the set in force on every payment, recorded and compared, never enforced.") var shadow = false
    func run() async throws {
      let ruleSet = try RulesCommand.readRuleSet(self.file)
      let expected = self.expectedVersion
      let shadow = self.shadow
      let response = try await RulesCommand.admin(self.connection) {
        try await $0.putRuleSet(.with { $0.ruleSet = ruleSet; $0.expectedVersion = expected; $0.shadow = shadow })
      }
      if self.connection.json {
        try printJSON(response)
      } else {
        printFields([
          (shadow ? "shadow version" : "version", String(response.ruleSet.version)), ("rules", String(response.ruleSet.rules.count)),
          ("receipt", "journal entry \(response.receipt.journalSequence) \(hex(response.receipt.entryHash))"),
        ])
      }
    }
  }

  struct Test: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Dry-run the rules (in force, or --rules FILE) over one payment instruction, on the account's features now.")
    @OptionGroup var connection: ConnectionOptions
    @Option(help: "A PaymentInstruction in JSON (as in `payments show --json`'s instruction).") var payment: String
    @Option(help: "Rule set file to test instead of the one in force.") var rules: String?
    func run() async throws {
      let instruction: Banklink_V1_PaymentInstruction
      do {
        instruction = try Banklink_V1_PaymentInstruction(jsonString: String(contentsOfFile: self.payment, encoding: .utf8))
      } catch {
        throw ValidationError("\(self.payment) is not a payment instruction in JSON: \(error)")
      }
      let candidate = try self.rules.map(RulesCommand.readRuleSet)
      let response = try await RulesCommand.admin(self.connection) { client in
        try await client.testRuleSet(.with {
          if let candidate { $0.ruleSet = candidate }
          $0.payment = instruction
        })
      }
      if self.connection.json {
        try printJSON(response)
        return
      }
      for decision in response.decisions {
        print("outcome: \(ruleActionText(decision.outcome)) (rule set \(decision.ruleSetVersion), score \(decision.score))")
        for hit in decision.hits { print("  " + ruleHitText(hit)) }
      }
    }
  }

  struct Backtest: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Re-evaluate a rule set (in force, or --rules FILE) over stored payments, on the variables each was decided on.")
    @OptionGroup var connection: ConnectionOptions
    @Option(help: "Rule set file to backtest instead of the one in force.") var rules: String?
    @Option(help: "Payments created at or after this time (RFC 3339).") var since: String?
    @Option(help: "Payments created before this time (RFC 3339).") var until: String?
    @Option(help: "At most this many payments (default 1000, at most 10000).") var max: Int32 = 0
    func run() async throws {
      let candidate = try self.rules.map(RulesCommand.readRuleSet)
      let start = try self.since.map { try parseTime($0, option: "--since") }
      let end = try self.until.map { try parseTime($0, option: "--until") }
      let max = self.max
      let response = try await RulesCommand.admin(self.connection) { client in
        try await client.testRuleSet(.with {
          if let candidate { $0.ruleSet = candidate }
          $0.backtest = .with {
            if let start { $0.startTime = start }
            if let end { $0.endTime = end }
            $0.maxPayments = max
          }
        })
      }
      if self.connection.json {
        try printJSON(response)
        return
      }
      printFields([
        ("evaluated", String(response.paymentsEvaluated)), ("allow", String(response.allowed)), ("review", String(response.reviewed)),
        ("block", String(response.blocked)), ("changed", "\(response.changed) (outcome differs from the one recorded)"),
        ("not evaluable", "\(response.notEvaluable) (created before rules were in force)"),
      ])
      if !response.hitsByRule.isEmpty {
        print("")
        printTable(["RULE", "HITS"], response.hitsByRule.sorted { $0.key < $1.key }.map { [$0.key, String($0.value)] })
      }
      for decision in response.decisions {
        print("\n\(decision.paymentID): would \(ruleActionText(decision.outcome))")
        for hit in decision.hits { print("  " + ruleHitText(hit)) }
      }
    }
  }

  struct ShadowReport: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "shadow-report",
      abstract: "Compare the shadow set's decisions on live payments with the active set's: outcomes, hits per rule, differences.")
    @OptionGroup var connection: ConnectionOptions
    @Option(help: "The shadow version to report on (default: the one running, else the last one).") var version: UInt64 = 0
    @Option(help: "Differences to list, newest first (at most 100).") var limit: Int32 = 20
    @Option(help: "Continue from the page token a previous report printed.") var pageToken: String?
    func run() async throws {
      let (version, limit, token) = (self.version, self.limit, self.pageToken)
      let report = try await RulesCommand.admin(self.connection) { client in
        try await client.getShadowReport(.with {
          $0.shadowVersion = version
          $0.pageSize = limit
          if let token { $0.pageToken = token }
        })
      }
      if self.connection.json {
        try printJSON(report)
        return
      }
      printFields([
        ("shadow version", "\(report.shadowVersion) (\(report.running ? "running" : "stopped"))"),
        ("since", "\(isoTime(report.since)) by \(report.putBy)"),
        ("evaluated", String(report.paymentsEvaluated)),
        ("changed", "\(report.changed) (shadow outcome differs from the active one)"),
        ("rule errors", String(report.ruleErrors)),
      ])
      if !report.outcomes.isEmpty {
        print("")
        printTable(
          ["ACTIVE", "SHADOW", "PAYMENTS"],
          report.outcomes.map { [ruleActionText($0.active), ruleActionText($0.shadow), String($0.payments)] })
      }
      if !report.hitsByRule.isEmpty {
        print("")
        printTable(["RULE", "HITS"], report.hitsByRule.sorted { $0.key < $1.key }.map { [$0.key, String($0.value)] })
      }
      for difference in report.differences {
        print(
          "\n\(difference.paymentID) \(isoTime(difference.createTime)): active \(ruleActionText(difference.activeOutcome)), shadow would \(ruleActionText(difference.shadow.outcome))"
        )
        for hit in difference.shadow.hits { print("  " + ruleHitText(hit)) }
      }
      if report.differencesNotKept > 0 { print("\n\(report.differencesNotKept) more differences were counted but not kept") }
      if !report.nextPageToken.isEmpty { print("\nmore: --page-token \(report.nextPageToken)") }
    }
  }

  struct ShadowStop: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "shadow-stop", abstract: "Stop the shadow set (its report stays readable).")
    @OptionGroup var connection: ConnectionOptions
    @Option(help: "Refuse unless this shadow version is the one running (0: do not check).") var expectedVersion: UInt64 = 0
    func run() async throws {
      let expected = self.expectedVersion
      let response = try await RulesCommand.admin(self.connection) {
        try await $0.clearShadowRuleSet(.with { $0.expectedVersion = expected })
      }
      if self.connection.json {
        try printJSON(response)
      } else if response.stoppedVersion == 0 {
        print("no shadow rule set was running")
      } else {
        printFields([
          ("stopped", "shadow version \(response.stoppedVersion)"),
          ("receipt", "journal entry \(response.receipt.journalSequence) \(hex(response.receipt.entryHash))"),
        ])
      }
    }
  }

  struct Eval: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Evaluate EXPRESSION against variables from a JSON object (the daemon checks and runs it; nothing is stored).",
      discussion: """
        Variables take their types from their values: whole numbers are int, numbers with a fraction or
        an exponent double, objects map(string, …), arrays list(…). Example:
          banklink rules eval 'amount > 100000 && country in ["KP", "IR"]' --vars vars.json
        """)
    @OptionGroup var connection: ConnectionOptions
    @Argument(help: "The expression.") var expression: String
    @Option(help: "A file holding a JSON object of variables ('-' for standard input).") var vars: String?
    func run() async throws {
      var variables = ""
      if let vars = self.vars {
        variables =
          vars == "-"
          ? String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self)
          : try String(contentsOfFile: vars, encoding: .utf8)
      }
      let expression = self.expression
      let json = variables
      let response = try await RulesCommand.admin(self.connection) { client in
        try await client.evaluateExpression(.with { $0.expression = expression; $0.variablesJson = json })
      }
      if self.connection.json {
        try printJSON(response)
      } else if case .evaluationError(let error) = response.result {
        print("error: \(error)")
      } else {
        print("\(response.value)  (\(response.type))")
      }
      if case .evaluationError = response.result { throw ExitCode.failure }
    }
  }
}
