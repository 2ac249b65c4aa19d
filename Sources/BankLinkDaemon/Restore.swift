import BankLinkCore
import BankLinkJournal
import BankLinkStore
import Foundation

/// Restores a backup (`banklink admin backup FILE`, the `Backup` RPC) into an empty data
/// directory, and checks it before the daemon is started on it: the copy opens as an LMDB
/// environment of this build's schema, and the audit journal's hash chain verifies from its first
/// entry to its last.
public enum Restore {
  public struct Summary: Sendable, Hashable {
    public var bytes: Int64
    public var schemaVersion: UInt32
    public var journalEntries: UInt64
  }

  public struct Failure: Error, Sendable, CustomStringConvertible {
    public var description: String
  }

  /// Copies `file` to `directory/data.mdb` (temporary name, fsync, rename), then verifies it. A
  /// directory that already holds data is refused; a copy that does not verify is removed.
  public static func restore(from file: String, into directory: String) throws -> Summary {
    let target = directory + "/data.mdb"
    guard !FileManager.default.fileExists(atPath: target) else {
      throw Failure(description: "\(directory) already holds a data file; restore into an empty directory")
    }
    guard let source = FileHandle(forReadingAtPath: file) else { throw Failure(description: "cannot read \(file)") }
    defer { try? source.close() }
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
    let temporary = directory + "/.data.mdb.restoring"
    _ = FileManager.default.createFile(atPath: temporary, contents: nil, attributes: [.posixPermissions: 0o600])
    guard let destination = FileHandle(forWritingAtPath: temporary) else { throw Failure(description: "cannot write \(temporary)") }
    var bytes: Int64 = 0
    do {
      while let chunk = try source.read(upToCount: 1 << 20), !chunk.isEmpty {
        try destination.write(contentsOf: chunk)
        bytes += Int64(chunk.count)
      }
      try destination.synchronize()
      try destination.close()
    } catch {
      try? FileManager.default.removeItem(atPath: temporary)
      throw Failure(description: "copying \(file) failed: \(error)")
    }
    do {
      try Self.checkPages(temporary, bytes: bytes)
    } catch {
      try? FileManager.default.removeItem(atPath: temporary)
      throw error
    }
    guard rename(temporary, target) == 0 else { throw Failure(description: "cannot rename \(temporary) to \(target)") }
    do {
      let (schema, entries) = try Self.verify(directory: directory, bytes: bytes)
      return Summary(bytes: bytes, schemaVersion: schema, journalEntries: entries)
    } catch {
      try? FileManager.default.removeItem(atPath: target)
      try? FileManager.default.removeItem(atPath: directory + "/lock.mdb")
      throw error
    }
  }

  /// Checks, before LMDB maps the file, that it holds every page its newest meta page names:
  /// LMDB trusts the file, and reading a page past the end of a truncated one is a SIGBUS.
  static func checkPages(_ path: String, bytes: Int64) throws {
    guard let handle = FileHandle(forReadingAtPath: path) else { throw Failure(description: "cannot read \(path)") }
    defer { try? handle.close() }
    func meta(at offset: UInt64) throws -> (pageSize: Int64, lastPage: Int64, transaction: UInt64)? {
      try handle.seek(toOffset: offset)
      guard let page = try handle.read(upToCount: 160), page.count == 160 else { return nil }
      func value<T: FixedWidthInteger>(_ at: Int, _: T.Type) -> T {
        page.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: at, as: T.self) }
      }
      // Page header (16 bytes), then MDB_meta: magic, version, address, map size, the free and
      // main DB records (48 bytes each; the free DB's first field holds the page size), the last
      // page number and the transaction id.
      guard value(16, UInt32.self) == 0xBEEF_C0DE else { return nil }
      return (Int64(value(40, UInt32.self)), Int64(value(136, UInt64.self)), value(144, UInt64.self))
    }
    guard let first = try meta(at: 0), first.pageSize >= 512, first.pageSize <= 65_536 else {
      throw Failure(description: "\(path) is not an LMDB data file")
    }
    let second = try meta(at: UInt64(first.pageSize))
    let newest = second.map { $0.transaction > first.transaction ? $0 : first } ?? first
    let (needed, overflow) = (newest.lastPage + 1).multipliedReportingOverflow(by: newest.pageSize)
    guard !overflow, newest.lastPage >= 1, bytes >= needed else {
      throw Failure(description: "\(path) is truncated: its meta page names \(newest.lastPage + 1) pages of \(newest.pageSize) bytes, the file holds \(bytes) bytes")
    }
  }

  /// Opens the environment (which checks its schema version) and verifies the whole journal.
  static func verify(directory: String, bytes: Int64) throws -> (UInt32, UInt64) {
    let store: Store
    do {
      // The map must hold the file: the copy may be larger than the default map size.
      let mapSizeMiB = max(Limits.defaultMapSizeMiB, Int(bytes >> 20) + 64)
      store = try Store(configuration: .init(directory: directory, mapSizeMiB: mapSizeMiB))
    } catch {
      throw Failure(description: "the copy does not open as this build's data directory: \(error)")
    }
    let report = try store.withReadTransaction { try JournalVerifier.verify(in: $0) }
    guard report.valid else {
      throw Failure(description: "the audit journal in the copy does not verify: \(report.message)")
    }
    return (try store.storedSchemaVersion() ?? Store.schemaVersion, report.entriesVerified)
  }
}
