import ArgumentParser
import BankLinkDaemon
import BankLinkServer
import Foundation
import Logging

/// `banklinkd`: the BankLink gateway daemon.

struct BanklinkdCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "banklinkd",
    abstract: "BankLink gateway daemon: gRPC over mutual TLS between internal services and banks.",
    discussion: """
      Without --config it runs in development mode: 127.0.0.1:7443, data under ./var, the
      development PKI from certs/dev (make certs) and the demo principals.
      Exit codes: 0 after a clean shutdown (SIGTERM/SIGINT), 78 for a configuration error,
      1 for any other failure.
      """
  )

  @Option(name: .long, help: "Production configuration file (JSON; see docs/configuration.md).")
  var config: String?

  @Option(name: .long, help: "Listen address HOST:PORT, overriding the configuration.")
  var listen: String?

  @Option(name: .customLong("data-dir"), help: "Data directory, overriding the configuration.")
  var dataDir: String?

  @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error or critical.")
  var logLevel: String?

  @Option(
    name: .customLong("restore-from"),
    help: "Restore a backup (banklink admin backup) into the data directory, which must hold no data, verify it, and exit.")
  var restoreFrom: String?

  func run() async throws {
    if let backup = self.restoreFrom {
      let directory: String
      if let dataDir = self.dataDir {
        directory = dataDir
      } else if self.config != nil {
        do {
          directory = try DaemonConfiguration.resolve(file: self.config, overrides: .init(logLevel: self.logLevel)).dataDirectory
        } catch let error as ConfigError {
          FileHandle.standardError.write(Data("banklinkd: \(error)\n".utf8))
          throw ExitCode(78)
        }
      } else {
        FileHandle.standardError.write(Data("banklinkd: --restore-from needs --data-dir or --config\n".utf8))
        throw ExitCode(64)
      }
      do {
        let summary = try Restore.restore(from: backup, into: directory)
        print(
          "restored \(summary.bytes) bytes into \(directory): schema \(summary.schemaVersion), audit journal verified (\(summary.journalEntries) entries)")
        return
      } catch {
        FileHandle.standardError.write(Data("banklinkd: restore refused: \(error)\n".utf8))
        throw ExitCode.failure
      }
    }
    let configuration: DaemonConfiguration
    do {
      configuration = try DaemonConfiguration.resolve(
        file: self.config,
        overrides: .init(listen: self.listen, dataDirectory: self.dataDir, logLevel: self.logLevel)
      )
    } catch let error as ConfigError {
      FileHandle.standardError.write(Data("banklinkd: \(error)\n".utf8))
      throw ExitCode(78)  // EX_CONFIG: systemd does not restart on it (RestartPreventExitStatus).
    }

    let level = configuration.logLevel
    let format = configuration.logFormat
    LoggingSystem.bootstrap(
      { label, provider in
        switch format {
        case .json:
          var handler = JSONLogHandler(label: label, metadataProvider: provider)
          handler.logLevel = level
          return handler
        case .text:
          var handler = StreamLogHandler.standardError(label: label, metadataProvider: provider)
          handler.logLevel = level
          return handler
        }
      }, metadataProvider: RequestIDInterceptor.loggingMetadata)
    let logger = Logger(label: "banklinkd")
    do {
      let overrides = DaemonConfiguration.Overrides(listen: self.listen, dataDirectory: self.dataDir, logLevel: self.logLevel)
      var reload: (@Sendable () throws -> DaemonConfiguration)?
      if let file = self.config {
        reload = { try DaemonConfiguration.resolve(file: file, overrides: overrides) }
      }
      try await Daemon.run(configuration: configuration, reloadConfiguration: reload, logger: logger)
    } catch {
      logger.critical("banklinkd failed", metadata: ["error": "\(error)"])
      throw ExitCode.failure
    }
  }
}
