import ArgumentParser
import BankLinkRuntime
import Foundation

// Before anything touches Swift concurrency or NIO (see ProcessRuntime).
ProcessRuntime.configure(environment: ProcessInfo.processInfo.environment)

// ArgumentParser's async entry point, spelled out because `@main` cannot run the line above
// before the runtime starts.
func runCommand() async {
  do {
    var command = try await BanklinkCommand.asyncParseAsRoot(nil)
    if var asyncCommand = command as? any AsyncParsableCommand {
      try await asyncCommand.run()
    } else {
      try command.run()
    }
  } catch {
    BanklinkCommand.exit(withError: error)
  }
}
await runCommand()
