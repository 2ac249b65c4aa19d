import ArgumentParser
import BankLinkClient
import Foundation

/// Connection flags shared by every command that calls the daemon.
public struct ConnectionOptions: ParsableArguments, Sendable {
  public init() {}

  @Option(help: "Daemon address HOST:PORT [env: BANKLINK_ADDRESS, default 127.0.0.1:7443].")
  public var address: String?

  @Option(help: "CA bundle (PEM) to trust [env: BANKLINK_CA, default certs/dev/ca.pem].")
  public var ca: String?

  @Option(help: "Client certificate (PEM) [env: BANKLINK_CERT, default certs/dev/admin.pem].")
  public var cert: String?

  @Option(help: "Client private key (PEM) [env: BANKLINK_KEY, default certs/dev/admin.key].")
  public var key: String?

  @Flag(help: "Print JSON instead of a table, for scripts.")
  public var json = false

  public var client: ClientConfiguration {
    var configuration = ClientConfiguration.defaults(environment: ProcessInfo.processInfo.environment)
    if let address { configuration.address = address }
    if let ca { configuration.caPath = ca }
    if let cert { configuration.certificatePath = cert }
    if let key { configuration.keyPath = key }
    return configuration
  }
}
