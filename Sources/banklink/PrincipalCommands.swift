import ArgumentParser
import BankLinkClient
import BankLinkCommandLine
import BankLinkCore
import BankLinkProto
import Foundation
import SwiftProtobuf

struct PrincipalsCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "principals",
    abstract: "List principals (admin, auditor) or set one's roles and approval limits (admin).",
    subcommands: [List.self, Set.self], defaultSubcommand: List.self)

  struct List: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "The principals table in force, by identity.")
    @OptionGroup var connection: ConnectionOptions

    func run() async throws {
      let principals = try await reportingFailures {
        try await withBankLinkClient(self.connection.client) { client in
          let service = Banklink_V1_AdminService.Client(wrapping: client)
          var principals: [Banklink_V1_Principal] = []
          var token = ""
          repeat {
            let page = try await service.listPrincipals(.with {
              $0.pageSize = Int32(Limits.maxPageSize)
              $0.pageToken = token
            })
            principals += page.principals
            token = page.nextPageToken
          } while !token.isEmpty
          return principals
        }
      }
      if self.connection.json {
        try printJSON(Banklink_V1_ListPrincipalsResponse.with { $0.principals = principals })
        return
      }
      printTable(
        ["IDENTITY", "ROLES", "APPROVAL LIMITS", "OTP"],
        principals.map { principal in
          [
            principal.identity, principal.roles.map(roleText).joined(separator: ","),
            principal.approvalLimits.isEmpty ? "-" : principal.approvalLimits.map(formatMoney).joined(separator: ", "),
            principal.otpEnrolled ? "enrolled" : "-",
          ]
        }, maxCellWidth: 64)
    }
  }

  struct Set: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Grant IDENTITY exactly these roles and approval limits (creating it if needed).",
      discussion: """
        Replaces the principal's roles and limits whole: roles not given are removed, and no
        --limit means no limit of its own. No --role leaves the identity known with no roles.
        An admin cannot grant themselves a role or loosen their own limits, and the last admin
        cannot lose the role.
        """)
    @OptionGroup var connection: ConnectionOptions
    @Argument(help: "The certificate identity (URI SAN or common name).") var identity: String
    @Option(name: .customLong("role"), help: "A role to grant: viewer, payer, approver, reconciler, auditor, admin (repeat for several).")
    var roles: [String] = []
    @Option(
      name: .customLong("limit"),
      help: "An approval limit CUR:AMOUNT, the amount a decimal in the currency's units, e.g. CNY:50000.00 (repeat per currency).")
    var limits: [String] = []

    func run() async throws {
      var protoRoles: [Banklink_V1_Role] = []
      for name in self.roles {
        guard let role = Role(rawValue: name) else {
          throw ValidationError("--role '\(name)' is not a role; roles are \(Role.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        protoRoles.append(protoRole(role))
      }
      var protoLimits: [Banklink_V1_Money] = []
      for text in self.limits {
        let parts = text.split(separator: ":", maxSplits: 1).map(String.init)
        guard parts.count == 2, let currency = CurrencyCode(parts[0]),
          let minor = Money.parseMinorUnits(parts[1], exponent: Money.minorUnitExponent(of: currency))
        else {
          throw ValidationError("--limit '\(text)' is not CUR:AMOUNT (e.g. CNY:50000.00)")
        }
        protoLimits.append(.with {
          $0.currencyCode = currency.code
          $0.minorUnits = minor
        })
      }
      let response = try await reportingFailures {
        try await withBankLinkClient(self.connection.client) { client in
          try await Banklink_V1_AdminService.Client(wrapping: client).setPrincipalRoles(.with {
            $0.identity = self.identity
            $0.roles = protoRoles
            $0.approvalLimits = protoLimits
          })
        }
      }
      if self.connection.json {
        try printJSON(response)
        return
      }
      printFields([
        ("identity", response.principal.identity),
        ("roles", response.principal.roles.isEmpty ? "(none)" : response.principal.roles.map(roleText).joined(separator: ",")),
        ("approval limits", response.principal.approvalLimits.isEmpty ? "(none)" : response.principal.approvalLimits.map(formatMoney).joined(separator: ", ")),
        ("receipt", "journal entry \(response.receipt.journalSequence) \(hex(response.receipt.entryHash))"),
      ])
    }
  }
}

private func roleText(_ role: Banklink_V1_Role) -> String {
  Role.allCases.first { protoRole($0) == role }?.rawValue ?? "\(role)"
}

private func protoRole(_ role: Role) -> Banklink_V1_Role {
  switch role {
  case .viewer: .viewer
  case .payer: .payer
  case .approver: .approver
  case .auditor: .auditor
  case .admin: .admin
  case .reconciler: .reconciler
  }
}
