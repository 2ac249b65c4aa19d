import ArgumentParser
import Foundation
import GRPCCore
import SwiftProtobuf

/// Prints a protobuf message as JSON (proto3 JSON mapping, field names as in the .proto).
public func printJSON(_ message: some SwiftProtobuf.Message) throws {
  var options = JSONEncodingOptions()
  options.preserveProtoFieldNames = true
  options.alwaysPrintEnumsAsInts = false
  print(try message.jsonString(options: options))
}

/// Prints aligned `key: value` lines.
public func printFields(_ fields: [(String, String)]) {
  let width = fields.map(\.0.count).max() ?? 0
  for (key, value) in fields {
    print(key.padding(toLength: width, withPad: " ", startingAt: 0) + "  " + value)
  }
}

/// The running program's name (`banklink`, `banklink-load`), for messages on stderr.
public let programName = URL(fileURLWithPath: CommandLine.arguments.first ?? "banklink").lastPathComponent

/// Runs a call, turning failures into a message on stderr and exit code 1.
public func reportingFailures<T>(_ body: () async throws -> T) async throws -> T {
  do {
    return try await body()
  } catch let error as RPCError {
    FileHandle.standardError.write(Data("\(programName): \(statusName(error.code)): \(error.message)\n".utf8))
    throw ExitCode.failure
  } catch let error as ExitCode {
    throw error
  } catch {
    FileHandle.standardError.write(Data("\(programName): \(error)\n".utf8))
    throw ExitCode.failure
  }
}

/// Prints rows as an aligned table with a header; long cells are cut to keep rows on one line.
public func printTable(_ headers: [String], _ rows: [[String]], maxCellWidth: Int = 48) {
  let cells = rows.map { row in
    row.map { $0.count > maxCellWidth ? String($0.prefix(maxCellWidth - 1)) + "…" : $0 }
  }
  var widths = headers.map(\.count)
  for row in cells {
    for (index, cell) in row.enumerated() { widths[index] = max(widths[index], cell.count) }
  }
  func line(_ row: [String]) -> String {
    zip(row, widths).map { $0.padding(toLength: $1, withPad: " ", startingAt: 0) }.joined(separator: "  ")
      .trimmingCharacters(in: .whitespaces)
  }
  print(line(headers))
  for row in cells { print(line(row)) }
  if rows.isEmpty { print("(none)") }
}

/// The canonical gRPC status name (`NOT_FOUND`), as scripts and other gRPC tools print it.
public func statusName(_ code: RPCError.Code) -> String {
  var name = ""
  for character in "\(code)" {
    if character.isUppercase { name += "_" }
    name += character.uppercased()
  }
  return name == "INTERNAL_ERROR" ? "INTERNAL" : name
}
