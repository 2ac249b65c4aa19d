import ArgumentParser
import Foundation
import GRPCCore
import SwiftProtobuf

/// Prints a protobuf message as JSON (proto3 JSON mapping, field names as in the .proto).
func printJSON(_ message: some SwiftProtobuf.Message) throws {
  var options = JSONEncodingOptions()
  options.preserveProtoFieldNames = true
  options.alwaysPrintEnumsAsInts = false
  print(try message.jsonString(options: options))
}

/// Prints aligned `key: value` lines.
func printFields(_ fields: [(String, String)]) {
  let width = fields.map(\.0.count).max() ?? 0
  for (key, value) in fields {
    print(key.padding(toLength: width, withPad: " ", startingAt: 0) + "  " + value)
  }
}

/// Runs a call, turning failures into a message on stderr and exit code 1.
func reportingFailures<T>(_ body: () async throws -> T) async throws -> T {
  do {
    return try await body()
  } catch let error as RPCError {
    FileHandle.standardError.write(Data("banklink: \(error.code): \(error.message)\n".utf8))
    throw ExitCode.failure
  } catch let error as ExitCode {
    throw error
  } catch {
    FileHandle.standardError.write(Data("banklink: \(error)\n".utf8))
    throw ExitCode.failure
  }
}
