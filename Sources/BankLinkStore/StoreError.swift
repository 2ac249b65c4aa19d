/// An error from the LMDB store. Every LMDB return code is wrapped once, where the C call is
/// made, into one of these codes with a message that says how to fix the problem.
public struct StoreError: Error, Sendable, CustomStringConvertible {
  public struct Code: Hashable, Sendable, CustomStringConvertible {
    private enum Wrapped: Hashable, Sendable {
      case mapFull
      case schemaMismatch
      case corrupted
      case readersFull
      case ioFailure
      case invalidArgument
      case notFound
      case other
    }

    private let wrapped: Wrapped
    private init(_ wrapped: Wrapped) { self.wrapped = wrapped }

    /// The environment's map size is exhausted: raise `storage.map_size_mib`.
    public static let mapFull = Code(.mapFull)
    /// The data directory was written by a different schema version.
    public static let schemaMismatch = Code(.schemaMismatch)
    /// LMDB reports corrupted pages or an incompatible file.
    public static let corrupted = Code(.corrupted)
    /// The reader table is full: more concurrent read transactions than `Limits.maxReaders`.
    public static let readersFull = Code(.readersFull)
    /// The operating system refused a file operation (permissions, disk full, missing directory).
    public static let ioFailure = Code(.ioFailure)
    /// A key or value that LMDB refuses (e.g. an empty or over-long key).
    public static let invalidArgument = Code(.invalidArgument)
    /// A named database or record that must exist does not.
    public static let notFound = Code(.notFound)
    /// Any other LMDB failure; the message carries LMDB's own text.
    public static let other = Code(.other)

    public var description: String {
      switch self.wrapped {
      case .mapFull: "map full"
      case .schemaMismatch: "schema mismatch"
      case .corrupted: "corrupted"
      case .readersFull: "readers full"
      case .ioFailure: "I/O failure"
      case .invalidArgument: "invalid argument"
      case .notFound: "not found"
      case .other: "other"
      }
    }
  }

  public var code: Code
  public var message: String
  /// LMDB's or the OS's return code, when the error came from a C call.
  public var returnCode: Int32?

  public init(code: Code, message: String, returnCode: Int32? = nil) {
    self.code = code
    self.message = message
    self.returnCode = returnCode
  }

  public var description: String {
    "store error (\(self.code)): \(self.message)"
  }
}
