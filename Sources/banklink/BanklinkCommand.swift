import ArgumentParser
import BankLinkClient
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
      PolicyCommand.self, OTPCommand.self, PrincipalsCommand.self, AlertsCommand.self, AuditCommand.self, BenchCommand.self, DevCertsCommand.self,
    ]
  )
}

/// Connection flags shared by every command that calls the daemon.
struct ConnectionOptions: ParsableArguments {
  @Option(help: "Daemon address HOST:PORT [env: BANKLINK_ADDRESS, default 127.0.0.1:7443].")
  var address: String?

  @Option(help: "CA bundle (PEM) to trust [env: BANKLINK_CA, default certs/dev/ca.pem].")
  var ca: String?

  @Option(help: "Client certificate (PEM) [env: BANKLINK_CERT, default certs/dev/admin.pem].")
  var cert: String?

  @Option(help: "Client private key (PEM) [env: BANKLINK_KEY, default certs/dev/admin.key].")
  var key: String?

  @Flag(help: "Print JSON instead of a table, for scripts.")
  var json = false

  var client: ClientConfiguration {
    var configuration = ClientConfiguration.defaults(environment: ProcessInfo.processInfo.environment)
    if let address { configuration.address = address }
    if let ca { configuration.caPath = ca }
    if let cert { configuration.certificatePath = cert }
    if let key { configuration.keyPath = key }
    return configuration
  }
}
