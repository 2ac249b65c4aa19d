/// A named LMDB database inside the store's environment.
///
/// The store opens exactly the databases in ``Database/all`` when it starts; a module that needs
/// a new database adds it here (and bumps ``Store/schemaVersion`` if existing data changes shape).
public struct Database: Hashable, Sendable, CustomStringConvertible {
  public let name: String

  private init(_ name: String) { self.name = name }

  /// Store metadata: the schema version and other environment-wide records.
  public static let meta = Database("meta")
  /// Principals managed at run time (overrides and additions to the configured table).
  public static let principals = Database("principals")

  /// Every database of the current schema.
  public static let all: [Database] = [.meta, .principals]

  public var description: String { self.name }
}
