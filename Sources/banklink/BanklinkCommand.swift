import ArgumentParser
import BankLinkClient
import BankLinkCommandLine
import Foundation

/// `banklink`: the admin CLI. Talks to banklinkd only over gRPC with mutual TLS.

struct BanklinkCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "banklink",
    abstract: "BankLink admin CLI.",
    discussion: """
      Connection settings come from flags, else the environment (BANKLINK_ADDRESS, BANKLINK_CA,
      BANKLINK_CERT, BANKLINK_KEY), else the development defaults (127.0.0.1:7443 as 'admin'
      with certs/dev). Exit codes: 0 success, 1 the call failed (the gRPC status is printed),
      64 bad usage.
      """,
    subcommands: [
      HealthCommand.self, WhoAmICommand.self, AccountsCommand.self, BalanceCommand.self, TransactionsCommand.self,
      PayCommand.self, PaymentsCommand.self, ApprovalsCommand.self, ApproveCommand.self, RejectCommand.self,
      PolicyCommand.self, OTPCommand.self, PrincipalsCommand.self, AlertsCommand.self, RulesCommand.self, AuditCommand.self,
      StatementsCommand.self, ReconcileCommand.self, CertificatesCommand.self, AdminCommand.self, DevCertsCommand.self,
    ]
  )
}
