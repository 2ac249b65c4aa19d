/// Every limit of the daemon, in one place, each with the reason for its value.
///
/// Changing a limit is a product decision: the tests and docs/configuration.md refer to these
/// names rather than to literal numbers.
public enum Limits {
  /// Largest gRPC request message accepted (bytes). Statement imports are the largest requests;
  /// 16 MiB carries a camt.053 file of roughly 20,000 entries. Larger files must be split.
  public static let maxRequestMessageBytes = 16 * 1024 * 1024

  /// Concurrent HTTP/2 streams one client connection may open. Bounds the work one caller can
  /// put in flight; load generators open more connections instead.
  public static let maxConcurrentStreamsPerConnection = 256

  /// How long SIGTERM/SIGINT waits for in-flight calls and streams to finish before cancelling
  /// them. systemd's default `TimeoutStopSec` is 90 s; this stays well inside it.
  public static let shutdownDrainSeconds = 10

  /// Default LMDB map size (MiB) when the configuration does not say. LMDB reserves address
  /// space, not disk, so a generous default costs nothing until used.
  public static let defaultMapSizeMiB = 1024

  /// Smallest accepted LMDB map size (MiB): below this the environment cannot hold its own
  /// metadata and the first sync would fail.
  public static let minMapSizeMiB = 1

  /// Largest accepted LMDB map size (MiB), 1 TiB: a guard against a unit mistake (bytes given as
  /// MiB) reserving absurd address space.
  public static let maxMapSizeMiB = 1024 * 1024

  /// Named databases the LMDB environment may hold. Each costs a slot in the environment's
  /// table; the store opens its own fixed set and this leaves room for later schema versions.
  public static let maxNamedDatabases = 32

  /// Concurrent LMDB read transactions (LMDB's reader table). Must exceed the number of threads
  /// that can read at once: the cooperative pool, the event loops and background services.
  public static let maxReaders = 256

  /// Longest principal identity accepted (characters), from a URI SAN or a common name.
  public static let maxIdentityLength = 256

  /// Largest number of principals in the table. The table is consulted on every call and kept in
  /// memory; thousands are plenty for internal services and operators.
  public static let maxPrincipals = 10_000

  /// Largest configuration file read (bytes); anything bigger is a mistake, not a config.
  public static let maxConfigFileBytes = 1024 * 1024
}

extension Limits {
  /// Concurrent `grpc.health.v1.Health/Watch` streams. Probes need a handful; the bound stops a
  /// misbehaving client from pinning memory with idle streams.
  public static let maxHealthWatchers = 64
}
