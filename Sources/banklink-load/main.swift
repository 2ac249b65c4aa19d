import BankLinkRuntime
import Foundation

// Before anything touches Swift concurrency or NIO (see ProcessRuntime).
ProcessRuntime.configure(environment: ProcessInfo.processInfo.environment)
await ProcessRuntime.run(LoadCommand.self)
